//! Reverse pipelines: read a CRM source list, diff it against a cohort baseline, and apply the minimal membership calls.
