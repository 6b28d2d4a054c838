//! The built-in Amplitude API emulator (`cohort-sync emulate`): a real HTTP server with quotas, async jobs, presigned redirects and fault injection.
