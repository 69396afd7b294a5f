"""The daemon's parts under service.py: the job lifecycle, its one record writer, the outbox scan,
the engines. Only service.py imports them (tests/import_graph.py)."""
