"""The server behind the HTTP API: jobs, schedules, policy, settings, loops, submission to Ray."""
