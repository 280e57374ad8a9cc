//! Parquet partitions, the index, quarantine and integrity.

use mlcore_research::dataset::{self, Dataset, DatasetError, QUARANTINE_FILE};
use mlcore_testkit as testutil;

#[test]
fn partitions_round_trip_through_parquet() {
    let dir = tempfile::tempdir().unwrap();
    let index = testutil::synth_dataset(dir.path(), 5, 3, 2, 60_000);
    assert_eq!(index.partitions.len(), 6);
    let p = &index.partitions[0];
    assert_eq!(p.path, "symbol=EURUSD/date=2026-01-05/part.parquet");
    assert_eq!(p.rows, 1440);
    let quotes = dataset::read_partition(&dir.path().join(&p.path), 0).unwrap();
    assert_eq!(quotes.len(), 1440);
    assert_eq!(quotes[0].ts_ns, p.first_ts_ns);
    assert_eq!(quotes.last().unwrap().ts_ns, p.last_ts_ns);
    assert!(quotes.iter().all(|q| q.is_sane()));
}

#[test]
fn loaded_quotes_are_in_time_order_across_symbols() {
    let dir = tempfile::tempdir().unwrap();
    testutil::synth_dataset(dir.path(), 5, 3, 2, 60_000);
    let quotes = Dataset::open(dir.path())
        .unwrap()
        .load_quotes(&["EURUSD", "GBPUSD", "USDJPY"])
        .unwrap();
    assert_eq!(quotes.len(), 3 * 2 * 1440);
    assert!(quotes
        .windows(2)
        .all(|w| (w[0].ts_ns, w[0].symbol) < (w[1].ts_ns, w[1].symbol)));
}

#[test]
fn quarantined_partition_is_excluded_and_reported() {
    let dir = tempfile::tempdir().unwrap();
    testutil::synth_dataset(dir.path(), 5, 2, 2, 60_000);
    let bad = dir.path().join("symbol=GBPUSD/date=2026-01-06");
    std::fs::write(
        bad.join(QUARANTINE_FILE),
        r#"{"reason": "stale feed: 40 min gap"}"#,
    )
    .unwrap();
    let ds = Dataset::open(dir.path()).unwrap();
    assert_eq!(ds.included.len(), 3);
    assert_eq!(ds.quarantined.len(), 1);
    assert_eq!(ds.quarantined[0].entry.symbol, "GBPUSD");
    assert_eq!(ds.quarantined[0].reason, "stale feed: 40 min gap");
    let quotes = ds.load_quotes(&["EURUSD", "GBPUSD"]).unwrap();
    assert_eq!(quotes.len(), 3 * 1440);
}

#[test]
fn a_changed_partition_is_an_error_not_a_silent_skip() {
    let dir = tempfile::tempdir().unwrap();
    let index = testutil::synth_dataset(dir.path(), 5, 1, 1, 60_000);
    let path = dir.path().join(&index.partitions[0].path);
    let other = tempfile::tempdir().unwrap();
    let replacement = testutil::synth_dataset(other.path(), 6, 1, 1, 60_000);
    std::fs::copy(other.path().join(&replacement.partitions[0].path), &path).unwrap();
    let err = Dataset::open(dir.path())
        .unwrap()
        .load_quotes(&["EURUSD"])
        .unwrap_err();
    assert!(matches!(err, DatasetError::HashMismatch { .. }), "{err}");
}

#[test]
fn same_seed_writes_identical_files() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let ia = testutil::synth_dataset(a.path(), 9, 2, 1, 60_000);
    let ib = testutil::synth_dataset(b.path(), 9, 2, 1, 60_000);
    assert_eq!(ia, ib, "same seed, same partitions and hashes");
}
