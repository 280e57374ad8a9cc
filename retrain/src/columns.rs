//! Plain column files for the steps' numeric outputs (feature rows,
//! labels): little-endian values back to back, nothing else. Read back
//! whole; a length that is not a multiple of the value size is an error
//! naming the file, never a silently shortened column.

use std::path::{Path, PathBuf};

/// A column that could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum ColumnError {
    /// Filesystem error.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The file's length does not fit the type or the expected rows.
    #[error("{path}: {len} bytes is not {what}")]
    Length {
        /// The file.
        path: PathBuf,
        /// Its length.
        len: usize,
        /// What it should be.
        what: String,
    },
}

/// A value a column holds.
pub trait Value: Copy {
    /// Bytes per value.
    const SIZE: usize;
    /// Appends the little-endian bytes.
    fn put(self, out: &mut Vec<u8>);
    /// Reads one from exactly `SIZE` bytes.
    fn get(b: &[u8]) -> Self;
}

macro_rules! value {
    ($($t:ty),*) => {$(
        impl Value for $t {
            const SIZE: usize = std::mem::size_of::<$t>();
            fn put(self, out: &mut Vec<u8>) {
                out.extend_from_slice(&self.to_le_bytes());
            }
            fn get(b: &[u8]) -> Self {
                let mut a = [0u8; std::mem::size_of::<$t>()];
                a.copy_from_slice(b);
                <$t>::from_le_bytes(a)
            }
        }
    )*};
}
value!(f32, f64, i64, u16, u64);

impl Value for bool {
    const SIZE: usize = 1;
    fn put(self, out: &mut Vec<u8>) {
        out.push(u8::from(self));
    }
    fn get(b: &[u8]) -> Self {
        b[0] != 0
    }
}

/// Writes `values` to `dir/name`.
pub fn write<T: Value>(dir: &Path, name: &str, values: &[T]) -> Result<(), ColumnError> {
    let mut out = Vec::with_capacity(values.len() * T::SIZE);
    for v in values {
        v.put(&mut out);
    }
    let path = dir.join(name);
    std::fs::write(&path, out).map_err(|source| ColumnError::Io { path, source })
}

/// Reads `dir/name`; with `rows`, checks it holds exactly that many values.
pub fn read<T: Value>(dir: &Path, name: &str, rows: Option<usize>) -> Result<Vec<T>, ColumnError> {
    let path = dir.join(name);
    let bytes = std::fs::read(&path).map_err(|source| ColumnError::Io {
        path: path.clone(),
        source,
    })?;
    let fits = bytes.len() % T::SIZE == 0 && rows.is_none_or(|r| r * T::SIZE == bytes.len());
    if !fits {
        return Err(ColumnError::Length {
            path,
            len: bytes.len(),
            what: match rows {
                Some(r) => format!("{r} values of {} bytes", T::SIZE),
                None => format!("a whole number of {}-byte values", T::SIZE),
            },
        });
    }
    Ok(bytes.chunks_exact(T::SIZE).map(T::get).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_length_checks() {
        let dir = tempfile::tempdir().unwrap();
        let x = [1.5f32, -0.0, f32::MAX, 3.25e-7];
        write(dir.path(), "x.f32", &x).unwrap();
        assert_eq!(read::<f32>(dir.path(), "x.f32", Some(4)).unwrap(), x);
        write(dir.path(), "b.u8", &[true, false, true]).unwrap();
        assert_eq!(
            read::<bool>(dir.path(), "b.u8", None).unwrap(),
            [true, false, true]
        );
        let e = read::<f32>(dir.path(), "x.f32", Some(5)).unwrap_err().to_string();
        assert!(e.contains("16 bytes is not 5 values of 4 bytes"), "{e}");
        std::fs::write(dir.path().join("odd.i64"), [0u8; 9]).unwrap();
        assert!(read::<i64>(dir.path(), "odd.i64", None).is_err());
    }
}
