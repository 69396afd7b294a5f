"""Retention: remove whole terminal jobs, oldest first, while the outbox is over a limit.

Limits (the `retention` section of the config; `MAX_JOB_*` in the environment):

- `max_job_age_hours`: a terminal job that finished more than this long ago is deleted (reason "age").
- `max_job_count`: while there are more job folders than this, the oldest terminal jobs are deleted
  (reason "count"). Every job folder counts, queued, processing and unreadable ones too, but only
  terminal ones are deleted, so the count may stay above the limit while many jobs are running.
- `max_job_storage_mb`: while the job folders hold more than this many MiB (sum of file sizes), the
  oldest terminal jobs are deleted (reason "storage"). Every job folder counts, as for the count.

A limit of 0 means "no limit", for each of the three (retention that deletes everything because a
value was left at 0 would be the worse surprise). "Oldest" is by `finished_at`, else `created_at`;
ties go to the earlier `created_at`, then the smaller job id, so the order is always the same. A job
over several limits is reported under the first that applies, in the order age, count, storage.

Only job folders are ever removed: names that are job ids, real directories (not symlinks), with a
metadata.json that says completed, failed or cancelled and no RETRY file (invariant 5). Deleting one
is crash-safe: take the job's ownership lease at the next epoch (which fences a daemon that might be
retrying it, and another host's retention), re-read metadata.json under the lease, rename the folder
into the hidden trash in the outbox's internal area, then remove it. A crash leaves either an intact
job or hidden trash, which the next pass removes. A lease that a crash left behind (older than the
heartbeat lease, with metadata.json still at the old epoch) is stepped over, and released again if
the job must be kept, so neither retention nor a RETRY stays blocked by it.

Sizes are measured once per finished job: a completed job never changes, and its size is kept in the
job store's record of completed jobs (spool/completed.py, one int per job, shared with the main loop
and the job API, and mostly filled by the daemon's start-up scan, so its metadata.json is not read
here again); a failed or cancelled one is re-read only when its folder's mtime changes (metadata.json
replaced, RETRY created). So a pass over 100,000 finished jobs costs one scandir of the outbox plus a
stat per failed/cancelled job, and allocates nothing per completed job: when no count or storage
limit is exceeded only the jobs over the age limit are looked at, and otherwise the completed ones
are sorted by their packed times and made into `JobUsage` only as far as the choice reads. In the
daemon the passes run on a background thread; what they find is reported as data (JobDeleted,
OutboxMeasured), which the service hands on to the other hooks from the main thread.

The package: `policy` (the decision, plain data in and out), `sweeper` (one outbox: measuring, the
crash-safe deletion, the trash) and `daemon_hooks` (the passes on a background thread, in the daemon).
"""
