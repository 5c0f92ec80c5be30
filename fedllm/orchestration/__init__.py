"""Running a job: `fedllm up` (every role on this host) and `fedllm submit` (to a SuperLink)."""
