//! Market data on disk: Parquet partitions `symbol=<S>/date=<YYYY-MM-DD>/part.parquet`
//! plus `dataset_index.json`, the layout the retraining pipeline reads.
//!
//! A partition folder holding `__quarantine.json` is excluded and reported
//! (data quality said no). A partition whose file is missing or whose sha256
//! differs from the index is an error, never silently skipped.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parquet::column::reader::ColumnReader;
use parquet::data_type::{DoubleType, Int64Type};
use parquet::file::properties::WriterProperties;
use parquet::file::reader::{FileReader, SerializedFileReader};
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::parser::parse_message_type;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use mlcore_market::Quote;

/// Index file name.
pub const INDEX_FILE: &str = "dataset_index.json";
/// Quarantine marker file name.
pub const QUARANTINE_FILE: &str = "__quarantine.json";

const SCHEMA: &str = "message quote {
    REQUIRED INT64 ts_ns;
    REQUIRED DOUBLE bid;
    REQUIRED DOUBLE ask;
    REQUIRED DOUBLE bid_size;
    REQUIRED DOUBLE ask_size;
}";

/// Why a dataset could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum DatasetError {
    /// Filesystem error on a path.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// Parquet encoding or decoding failed.
    #[error("{path}: parquet: {message}")]
    Parquet {
        /// The file.
        path: PathBuf,
        /// What failed.
        message: String,
    },
    /// `dataset_index.json` is malformed.
    #[error("{path}: invalid dataset index: {message}")]
    Index {
        /// The index file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A partition's content does not match its index entry.
    #[error("partition {path}: sha256 {actual} differs from the index ({expected}); the data changed after indexing")]
    HashMismatch {
        /// The partition file.
        path: PathBuf,
        /// From the index.
        expected: String,
        /// Computed.
        actual: String,
    },
}

/// `dataset_index.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatasetIndex {
    /// Layout version (1).
    pub format: u32,
    /// Where the data came from (e.g. `synthetic seed=7 interval_ms=5000`).
    pub source: String,
    /// Symbols, in universe order.
    pub symbols: Vec<String>,
    /// Quote interval, ms (0 when irregular).
    pub interval_ms: u32,
    /// Every partition written.
    pub partitions: Vec<PartitionEntry>,
}

/// One partition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PartitionEntry {
    /// Symbol.
    pub symbol: String,
    /// `YYYY-MM-DD`.
    pub date: String,
    /// Path of the Parquet file relative to the dataset root.
    pub path: String,
    /// Rows.
    pub rows: u64,
    /// sha256 of the file.
    pub sha256: String,
    /// First timestamp, ns.
    pub first_ts_ns: i64,
    /// Last timestamp, ns.
    pub last_ts_ns: i64,
}

/// The content of a `__quarantine.json` marker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QuarantineMarker {
    /// Why the partition is excluded.
    pub reason: String,
}

/// A partition left out, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Quarantined {
    /// The index entry.
    pub entry: PartitionEntry,
    /// The marker's reason (or why the marker could not be read).
    pub reason: String,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> DatasetError + '_ {
    move |source| DatasetError::Io {
        path: path.to_owned(),
        source,
    }
}

fn pq(path: &Path) -> impl Fn(parquet::errors::ParquetError) -> DatasetError + '_ {
    move |e| DatasetError::Parquet {
        path: path.to_owned(),
        message: e.to_string(),
    }
}

/// Relative path of a partition's file.
pub fn partition_path(symbol: &str, date: &str) -> String {
    format!("symbol={symbol}/date={date}/part.parquet")
}

/// Writes one partition (quotes of one symbol and day, in time order) and
/// returns its index entry.
pub fn write_partition(
    root: &Path,
    symbol: &str,
    date: &str,
    quotes: &[Quote],
) -> Result<PartitionEntry, DatasetError> {
    let rel = partition_path(symbol, date);
    let path = root.join(&rel);
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).map_err(io(dir))?;
    }
    let schema = Arc::new(parse_message_type(SCHEMA).map_err(pq(&path))?);
    let props = Arc::new(
        WriterProperties::builder()
            .set_compression(parquet::basic::Compression::SNAPPY)
            .build(),
    );
    let mut buf = Vec::new();
    {
        let mut writer = SerializedFileWriter::new(&mut buf, schema, props).map_err(pq(&path))?;
        let mut rg = writer.next_row_group().map_err(pq(&path))?;
        let ts: Vec<i64> = quotes.iter().map(|q| q.ts_ns).collect();
        let columns: [Vec<f64>; 4] = [
            quotes.iter().map(|q| q.bid).collect(),
            quotes.iter().map(|q| q.ask).collect(),
            quotes.iter().map(|q| q.bid_size).collect(),
            quotes.iter().map(|q| q.ask_size).collect(),
        ];
        let mut col = 0;
        while let Some(mut w) = rg.next_column().map_err(pq(&path))? {
            if col == 0 {
                w.typed::<Int64Type>()
                    .write_batch(&ts, None, None)
                    .map_err(pq(&path))?;
            } else {
                w.typed::<DoubleType>()
                    .write_batch(&columns[col - 1], None, None)
                    .map_err(pq(&path))?;
            }
            w.close().map_err(pq(&path))?;
            col += 1;
        }
        rg.close().map_err(pq(&path))?;
        writer.close().map_err(pq(&path))?;
    }
    fs::write(&path, &buf).map_err(io(&path))?;
    Ok(PartitionEntry {
        symbol: symbol.to_owned(),
        date: date.to_owned(),
        path: rel,
        rows: quotes.len() as u64,
        sha256: hex::encode(Sha256::digest(&buf)),
        first_ts_ns: quotes.first().map_or(0, |q| q.ts_ns),
        last_ts_ns: quotes.last().map_or(0, |q| q.ts_ns),
    })
}

/// Reads one partition's quotes; `symbol` is the universe index to stamp on them.
pub fn read_partition(path: &Path, symbol: u16) -> Result<Vec<Quote>, DatasetError> {
    let file = fs::File::open(path).map_err(io(path))?;
    let reader = SerializedFileReader::new(file).map_err(pq(path))?;
    let mut out = Vec::new();
    for g in 0..reader.num_row_groups() {
        let rg = reader.get_row_group(g).map_err(pq(path))?;
        let rows = usize::try_from(rg.metadata().num_rows()).unwrap_or(0);
        let mut ts = Vec::with_capacity(rows);
        if let ColumnReader::Int64ColumnReader(mut r) = rg.get_column_reader(0).map_err(pq(path))? {
            r.read_records(rows, None, None, &mut ts).map_err(pq(path))?;
        }
        let mut cols: [Vec<f64>; 4] = Default::default();
        for (i, col) in cols.iter_mut().enumerate() {
            if let ColumnReader::DoubleColumnReader(mut r) = rg.get_column_reader(i + 1).map_err(pq(path))? {
                r.read_records(rows, None, None, col).map_err(pq(path))?;
            }
        }
        if ts.len() != rows || cols.iter().any(|c| c.len() != rows) {
            return Err(DatasetError::Parquet {
                path: path.to_owned(),
                message: format!("expected {rows} rows in every column of the quote schema"),
            });
        }
        out.extend((0..rows).map(|k| Quote {
            ts_ns: ts[k],
            symbol,
            bid: cols[0][k],
            ask: cols[1][k],
            bid_size: cols[2][k],
            ask_size: cols[3][k],
        }));
    }
    Ok(out)
}

impl DatasetIndex {
    /// Writes `dataset_index.json` under `root`.
    pub fn write(&self, root: &Path) -> Result<(), DatasetError> {
        let path = root.join(INDEX_FILE);
        let text = serde_json::to_string_pretty(self).map_err(|e| DatasetError::Index {
            path: path.clone(),
            message: e.to_string(),
        })?;
        fs::write(&path, text + "\n").map_err(io(&path))
    }
}

/// An opened dataset: the partitions to use and those quarantined.
#[derive(Debug, Clone)]
pub struct Dataset {
    /// Root folder.
    pub root: PathBuf,
    /// The index as written.
    pub index: DatasetIndex,
    /// Partitions in use.
    pub included: Vec<PartitionEntry>,
    /// Partitions excluded by a quarantine marker.
    pub quarantined: Vec<Quarantined>,
}

impl Dataset {
    /// Opens `root`: reads the index and sorts partitions into included and
    /// quarantined.
    pub fn open(root: &Path) -> Result<Self, DatasetError> {
        let path = root.join(INDEX_FILE);
        let text = fs::read_to_string(&path).map_err(io(&path))?;
        let index: DatasetIndex = serde_json::from_str(&text).map_err(|e| DatasetError::Index {
            path: path.clone(),
            message: e.to_string(),
        })?;
        if index.format != 1 {
            return Err(DatasetError::Index {
                path,
                message: format!("unsupported format {}", index.format),
            });
        }
        let mut included = Vec::new();
        let mut quarantined = Vec::new();
        for entry in &index.partitions {
            let file = root.join(&entry.path);
            let marker = file.parent().map(|d| d.join(QUARANTINE_FILE));
            match marker.filter(|m| m.exists()) {
                Some(m) => {
                    let reason = fs::read_to_string(&m)
                        .ok()
                        .and_then(|t| serde_json::from_str::<QuarantineMarker>(&t).ok())
                        .map_or_else(
                            || format!("{} present (unreadable reason)", m.display()),
                            |q| q.reason,
                        );
                    quarantined.push(Quarantined {
                        entry: entry.clone(),
                        reason,
                    });
                }
                None => included.push(entry.clone()),
            }
        }
        Ok(Self {
            root: root.to_owned(),
            index,
            included,
            quarantined,
        })
    }

    /// All included quotes of `symbols` (universe order), merged in time order
    /// (ties by symbol index), each file checked against its sha256 first.
    pub fn load_quotes(&self, symbols: &[&str]) -> Result<Vec<Quote>, DatasetError> {
        let mut all = Vec::new();
        for entry in &self.included {
            let Some(idx) = symbols.iter().position(|s| *s == entry.symbol) else {
                continue;
            };
            let path = self.root.join(&entry.path);
            let bytes = fs::read(&path).map_err(io(&path))?;
            let actual = hex::encode(Sha256::digest(&bytes));
            if actual != entry.sha256 {
                return Err(DatasetError::HashMismatch {
                    path,
                    expected: entry.sha256.clone(),
                    actual,
                });
            }
            all.extend(read_partition(&path, idx as u16)?);
        }
        all.sort_by_key(|q| (q.ts_ns, q.symbol));
        Ok(all)
    }
}
