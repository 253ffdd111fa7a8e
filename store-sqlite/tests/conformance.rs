//! The shared `StateStore` conformance suite, against `SqliteStore` on a file in a temp dir and
//! against an in-memory database.

use gateway_core::store_conformance::Fixture;
use store_sqlite::SqliteStore;

fn on_file() -> Fixture {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SqliteStore::open(&dir.path().join("state.db")).expect("open store");
    Fixture::new(store).with_guard(dir)
}

fn in_memory() -> Fixture {
    Fixture::new(SqliteStore::open_in_memory().expect("open in-memory store"))
}

mod file {
    gateway_core::store_conformance_tests!(super::on_file);
}

mod memory {
    gateway_core::store_conformance_tests!(super::in_memory);
}
