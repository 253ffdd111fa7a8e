//! The router: adapter registry, configuration, and the dispatch pipeline.
