//! The export data path: a CSV byte stream (gzip or plain) parsed into Arrow batches and written as Parquet through object_store, published atomically.
