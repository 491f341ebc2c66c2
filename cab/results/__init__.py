"""Results: what every job leaves behind, and nothing that needs torch.

`records` is the record itself (schema, run ids, validation, atomic writes, reading a folder);
`environment` what a record says about where and how it ran (versions, git, hardware label, the
command, timestamps); `status` the one classifier that turns an exception into a record's status
(`oom`, `timeout`, `nan`, `failed`) and error, shared by `cab run` and `cab bench`; `markers` the
crash markers that turn a job killed before it could write its record into a `failed` record.
"""
