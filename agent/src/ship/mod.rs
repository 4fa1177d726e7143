//! Shipping events to the collector: batches, the disk spool, and the mTLS client.
