//! IDX parsing of small generated files, raw and gzip, and every malformed-file case.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests: a failed unwrap is a failed test, with its message.

use kiln_data::idx;
use kiln_data::mnist::{load_split, Kind, Scaling};
use std::io::Write;
use std::path::Path;

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(bytes).expect("in-memory write");
    enc.finish().expect("in-memory gzip")
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).expect("temp dir is writable");
    p
}

#[test]
fn raw_and_gzip_files_parse_to_the_same_data() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data: Vec<u8> = (0..2 * 3 * 4).map(|x| x as u8).collect();
    let bytes = idx::encode(&[2, 3, 4], &data);
    let raw = idx::read(&write(dir.path(), "raw", &bytes)).expect("raw parses");
    let gz = idx::read(&write(dir.path(), "gz", &gzip(&bytes))).expect("gzip parses");
    assert_eq!(raw, gz);
    assert_eq!(raw.dims, [2, 3, 4]);
    assert_eq!(raw.data, data);
}

#[test]
fn malformed_files_are_errors_naming_the_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    let good = idx::encode(&[3, 2, 2], &[0; 12]);
    let mut bad_magic = good.clone();
    bad_magic[0] = 7;
    let mut bad_type = good.clone();
    bad_type[2] = 0x0d;
    let mut bad_rank = good.clone();
    bad_rank[3] = 0;
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("bad magic", bad_magic, "bad magic number"),
        ("unsupported element type", bad_type, "element type 0x0d"),
        ("zero dims", bad_rank, "0 dims"),
        ("truncated header", good[..9].to_vec(), "truncated header"),
        ("truncated data", good[..good.len() - 1].to_vec(), "the header [3, 2, 2] says 28 bytes, the file has 27"),
        ("trailing bytes", [good.clone(), vec![1]].concat(), "says 28 bytes, the file has 29"),
        ("too short", vec![0, 0], "too short"),
        ("corrupt gzip", vec![0x1f, 0x8b, 1, 2, 3], "corrupt gzip"),
    ];
    for (name, bytes, expect) in cases {
        let path = write(dir.path(), "case-file", &bytes);
        let err = idx::read(&path).expect_err(name).to_string();
        assert!(err.contains("case-file") && err.contains(expect), "{name}: {err}");
    }
    let missing = idx::read(&dir.path().join("nope")).expect_err("missing file").to_string();
    assert!(missing.contains("nope"), "{missing}");
}

#[test]
fn mismatched_image_and_label_counts_and_bad_labels_are_errors() {
    let dir = tempfile::tempdir().expect("temp dir");
    write(dir.path(), "train-images-idx3-ubyte", &idx::encode(&[3, 2, 2], &[0; 12]));
    write(dir.path(), "train-labels-idx1-ubyte", &idx::encode(&[2], &[1, 2]));
    let err =
        load_split(dir.path(), "train", Kind::Mnist, Scaling::Standardized).expect_err("count mismatch").to_string();
    assert!(err.contains("holds 3 images") && err.contains("holds 2 labels"), "{err}");
    write(dir.path(), "train-labels-idx1-ubyte", &gzip(&idx::encode(&[3], &[1, 12, 2])));
    let err = load_split(dir.path(), "train", Kind::Mnist, Scaling::Standardized).expect_err("label 12").to_string();
    assert!(err.contains("label 12"), "{err}");
    write(dir.path(), "train-labels-idx1-ubyte", &idx::encode(&[3], &[1, 9, 2]));
    let ok = load_split(dir.path(), "train", Kind::Mnist, Scaling::Standardized).expect("valid split");
    assert_eq!(ok.labels(), [1, 9, 2]);
}

/// Found by fuzzing (fuzz/README.md): a few kilobytes of gzip that expand past 256 MiB are refused before they exhaust memory.
#[test]
fn a_gzip_bomb_is_an_error() {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    let zeros = vec![0u8; 1 << 20];
    for _ in 0..(kiln_data::idx::MAX_DECOMPRESSED >> 20) + 1 {
        gz.write_all(&zeros).unwrap_or_else(|e| panic!("{e}"));
    }
    let bomb = gz.finish().unwrap_or_else(|e| panic!("{e}"));
    assert!(bomb.len() < 1 << 20, "{} bytes", bomb.len());
    let err = kiln_data::idx::gunzip_if_needed(bomb, "bomb.gz").unwrap_err().to_string();
    assert!(err.contains("bomb.gz: decompresses to more than 256 MiB"), "{err}");
}
