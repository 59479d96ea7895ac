//! Fetching: the download path against a local HTTP server on 127.0.0.1, the checksum failure
//! path, a local-folder source, the cache, and the error when every source fails.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests: a failed unwrap is a failed test, with its message.

use kiln_data::fetch::{fetch_into, sha256_hex, DatasetSpec, FileSpec, Source};
use kiln_data::idx;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(bytes).expect("in-memory write");
    enc.finish().expect("in-memory gzip")
}

/// Serves `files` (path -> body) over HTTP/1.1 on 127.0.0.1 for a bounded number of requests;
/// returns the base URL and a request counter.
fn serve(files: Vec<(String, Vec<u8>)>, max_requests: usize) -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
    let addr = listener.local_addr().expect("local addr");
    let count = Arc::new(AtomicUsize::new(0));
    let counter = count.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().take(max_requests) {
            let Ok(mut stream) = stream else { continue };
            counter.fetch_add(1, Ordering::SeqCst);
            let mut buf = [0u8; 4096];
            let n = stream.read(&mut buf).unwrap_or(0);
            let req = String::from_utf8_lossy(&buf[..n]).to_string();
            let path = req.split_whitespace().nth(1).unwrap_or("/").to_string();
            let reply = match files.iter().find(|(p, _)| *p == path) {
                Some((_, body)) => {
                    let mut r =
                        format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len())
                            .into_bytes();
                    r.extend_from_slice(body);
                    r
                }
                None => b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_vec(),
            };
            let _ = stream.write_all(&reply);
        }
    });
    (format!("http://{addr}/data/"), count)
}

fn spec(files: Vec<FileSpec>, sources: Vec<Source>) -> DatasetSpec {
    DatasetSpec { name: "test", files, sources }
}

fn leak(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}

#[test]
fn downloads_verify_and_cache() {
    let a = idx::encode(&[3], &[1, 2, 3]);
    let b = idx::encode(&[2, 2, 2], &[9; 8]);
    let files = vec![
        FileSpec { name: "a-idx1-ubyte", sha256: leak(sha256_hex(&a)) },
        FileSpec { name: "b-idx3-ubyte", sha256: leak(sha256_hex(&b)) },
    ];
    let (base, hits) =
        serve(vec![("/data/a-idx1-ubyte.gz".into(), gzip(&a)), ("/data/b-idx3-ubyte.gz".into(), gzip(&b))], 16);
    let dir = tempfile::tempdir().expect("temp dir");
    let s = spec(files, vec![Source::Mirror(base)]);
    let out = fetch_into(&s, dir.path()).expect("download works");
    assert_eq!(std::fs::read(out.join("a-idx1-ubyte")).expect("cached"), a);
    assert_eq!(std::fs::read(out.join("b-idx3-ubyte")).expect("cached"), b);
    assert_eq!(hits.load(Ordering::SeqCst), 2);
    // Second call: everything is in the cache, no request is made.
    fetch_into(&s, dir.path()).expect("cache hit");
    assert_eq!(hits.load(Ordering::SeqCst), 2);
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .expect("dir")
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".part"))
        .collect();
    assert!(leftovers.is_empty());
}

#[test]
fn a_checksum_failure_is_deleted_and_reported_and_the_next_source_is_tried() {
    let good = idx::encode(&[3], &[1, 2, 3]);
    let tampered = idx::encode(&[3], &[1, 2, 4]);
    let file = FileSpec { name: "a-idx1-ubyte", sha256: leak(sha256_hex(&good)) };
    let (bad_base, _) = serve(vec![("/data/a-idx1-ubyte.gz".into(), gzip(&tampered))], 4);
    let local = tempfile::tempdir().expect("temp dir");
    std::fs::write(local.path().join("a-idx1-ubyte.gz"), gzip(&good)).expect("write");
    let dir = tempfile::tempdir().expect("temp dir");
    // Only the tampered mirror: an error that names the checksum failure, and nothing kept.
    let err = fetch_into(&spec(vec![file], vec![Source::Mirror(bad_base.clone())]), dir.path())
        .expect_err("checksum")
        .to_string();
    assert!(err.contains("failed its checksum") && err.contains("place the files by hand"), "{err}");
    assert!(!dir.path().join("a-idx1-ubyte").exists());
    // The tampered mirror, then a good local folder: the folder wins.
    let s = spec(vec![file], vec![Source::Mirror(bad_base), Source::Dir(local.path().to_path_buf())]);
    fetch_into(&s, dir.path()).expect("falls back to the folder");
    assert_eq!(std::fs::read(dir.path().join("a-idx1-ubyte")).expect("cached"), good);
    // A cached file that was corrupted is detected and fetched again.
    std::fs::write(dir.path().join("a-idx1-ubyte"), b"garbage").expect("write");
    fetch_into(&s, dir.path()).expect("refetch");
    assert_eq!(std::fs::read(dir.path().join("a-idx1-ubyte")).expect("cached"), good);
}

#[test]
fn when_every_source_fails_the_error_lists_them() {
    let file = FileSpec { name: "x-idx1-ubyte", sha256: "00" };
    let (base, _) = serve(vec![], 4);
    let dir = tempfile::tempdir().expect("temp dir");
    let s = spec(vec![file], vec![Source::Mirror(base.clone()), Source::Dir("/nonexistent/kiln".into())]);
    let err = fetch_into(&s, dir.path()).expect_err("nothing works").to_string();
    assert!(err.contains(&format!("download from {base}")) && err.contains("404"), "{err}");
    assert!(err.contains("copy from /nonexistent/kiln"), "{err}");
    assert!(err.contains("x-idx1-ubyte") && err.contains("KILN_DATA_DIR"), "{err}");
}

#[test]
fn gzip_files_placed_in_the_cache_by_hand_are_used_without_any_source() {
    let a = idx::encode(&[3], &[1, 2, 3]);
    let file = FileSpec { name: "g-idx1-ubyte", sha256: leak(sha256_hex(&a)) };
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("g-idx1-ubyte.gz"), gzip(&a)).expect("write");
    // The only source fails: the .gz in the cache must be enough.
    let s = spec(vec![file], vec![Source::Dir("/nonexistent/kiln".into())]);
    fetch_into(&s, dir.path()).expect("the .gz in the cache is used");
    assert_eq!(std::fs::read(dir.path().join("g-idx1-ubyte")).expect("unpacked"), a);
}
