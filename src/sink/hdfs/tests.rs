use std::io::Read;

use super::*;

fn config(dir: &Path, path: &str) -> HdfsConfig {
    let mut c: HdfsConfig = ron::from_str(&format!("(path: {path:?}, time_zone: Some(\"UTC\"))")).unwrap();
    c.base = dir.to_path_buf();
    c
}

/// Apache_2k.log lines as events with a `timestamp` header (a fixed hour) and a `host` header.
fn apache_events(n: usize) -> Vec<Event> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/topologies/data/loghub/Apache_2k.log");
    let text = std::fs::read_to_string(path).unwrap();
    text.lines()
        .take(n)
        .enumerate()
        .map(|(i, l)| {
            Event::new(l.to_string())
                .with_header("timestamp", (1_133_671_664_000 + i as i64 * 1000).to_string())
                .with_header("host", "web-1")
        })
        .collect()
}

fn body_lines(events: &[Event]) -> Vec<String> {
    events.iter().map(|e| String::from_utf8(e.body.to_vec()).unwrap()).collect()
}

fn run<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(f)
}

/// Every file under `dir`, recursively, in name order.
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            if e.path().is_dir() {
                stack.push(e.path());
            } else {
                out.push(e.path());
            }
        }
    }
    out.sort();
    out
}

fn text_lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path).unwrap().lines().map(String::from).collect()
}

/// What a reader gets from a compressed file, complete or still being written: everything up to
/// the last sync point (a stream without its end reads as an error after the data).
fn decompressed_lines(path: &Path, format: Format) -> (Vec<String>, bool) {
    let file = std::fs::File::open(path).unwrap();
    let mut reader: Box<dyn Read> = match format {
        Format::Gzip => Box::new(flate2::read::MultiGzDecoder::new(file)),
        Format::Zstd => Box::new(zstd::stream::read::Decoder::new(file).unwrap()),
        Format::DataStream => Box::new(file),
    };
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let complete = loop {
        match reader.read(&mut buf) {
            Ok(0) => break true,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(_) => break false,
        }
    };
    (String::from_utf8(out).unwrap().lines().map(String::from).collect(), complete)
}

#[test]
fn count_roll_renames_full_files_and_close_renames_the_rest() {
    let tmp = tempfile::tempdir().unwrap();
    let mut c = config(tmp.path(), "out/%{host}/%Y%m%d");
    (c.roll_count, c.roll_size, c.roll_interval) = (10, 0, Duration::ZERO);
    c.file_suffix = ".log".into();
    let counters = Arc::new(SinkCounters::default());
    let mut sink = HdfsSink::new(c, counters.clone()).unwrap();
    let events = apache_events(25);
    run(sink.deliver(&events)).unwrap();
    let dir = tmp.path().join("out/web-1/20051204");
    let open = files(&dir);
    assert_eq!(open.len(), 3, "{open:?}");
    let names: Vec<String> = open.iter().map(|p| p.file_name().unwrap().to_string_lossy().into_owned()).collect();
    assert!(names[..2].iter().all(|n| n.starts_with("FlumeData.") && n.ends_with(".log")), "{names:?}");
    assert!(names[2].ends_with(".log.tmp"), "the last file is still open: {names:?}");
    assert_eq!(text_lines(&open[2]).len(), 5, "the open file holds the batch's rest, flushed");
    run(sink.close()).unwrap();
    let closed = files(&dir);
    assert!(closed.iter().all(|p| p.extension().unwrap() == "log"), "{closed:?}");
    let lines: Vec<String> = closed.iter().flat_map(|p| text_lines(p)).collect();
    assert_eq!(lines, body_lines(&events));
    assert_eq!(closed.iter().map(|p| text_lines(p).len()).collect::<Vec<_>>(), [10, 10, 5]);
    assert_eq!((counters.connection_created.get(), counters.connection_closed.get()), (3, 3));
}

#[test]
fn size_roll_closes_a_file_at_the_event_that_reaches_the_size() {
    let tmp = tempfile::tempdir().unwrap();
    let mut c = config(tmp.path(), "out");
    (c.roll_count, c.roll_size, c.roll_interval) = (0, 2000, Duration::ZERO);
    let mut sink = HdfsSink::new(c, Arc::new(SinkCounters::default())).unwrap();
    let events = apache_events(300);
    for batch in events.chunks(64) {
        run(sink.deliver(batch)).unwrap();
    }
    run(sink.close()).unwrap();
    let all = files(&tmp.path().join("out"));
    assert!(all.len() > 5, "{all:?}");
    for (i, p) in all.iter().enumerate() {
        let len = std::fs::metadata(p).unwrap().len();
        let lines = text_lines(p);
        let without_last = len - lines.last().unwrap().len() as u64 - 1;
        assert!(without_last < 2000, "{p:?} was full before its last line");
        if i + 1 < all.len() {
            assert!(len >= 2000, "{p:?} rolled early at {len} bytes");
        }
    }
    let lines: Vec<String> = all.iter().flat_map(|p| text_lines(p)).collect();
    assert_eq!(lines, body_lines(&events));
}

#[test]
fn compressed_files_are_readable_after_each_batch_and_complete_after_close() {
    for format in [Format::Gzip, Format::Zstd] {
        let tmp = tempfile::tempdir().unwrap();
        let mut c = config(tmp.path(), "out");
        (c.roll_count, c.roll_size, c.roll_interval, c.format) = (700, 0, Duration::ZERO, format);
        c.sync = format == Format::Zstd;
        let mut sink = HdfsSink::new(c, Arc::new(SinkCounters::default())).unwrap();
        let events = apache_events(2000);
        let mut written = 0;
        for batch in events.chunks(150) {
            run(sink.deliver(batch)).unwrap();
            written += batch.len();
            // What was delivered (and would be committed) is readable now, open file included.
            let now: Vec<String> =
                files(&tmp.path().join("out")).iter().flat_map(|p| decompressed_lines(p, format).0).collect();
            assert_eq!(now, body_lines(&events[..written]), "{format:?}");
        }
        run(sink.close()).unwrap();
        let all = files(&tmp.path().join("out"));
        assert_eq!(all.len(), 3, "{all:?}");
        let mut lines = Vec::new();
        for p in &all {
            assert!(p.to_string_lossy().ends_with(format.extension()), "{p:?}");
            let (l, complete) = decompressed_lines(p, format);
            assert!(complete, "{p:?} is a complete stream");
            lines.extend(l);
        }
        assert_eq!(lines, body_lines(&events), "{format:?}");
    }
}

#[test]
fn unsafe_header_values_go_to_the_rejected_bucket_and_are_counted() {
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path().join("topology");
    let mut c = config(&base, "out/%{host}/%H");
    (c.roll_count, c.roll_size, c.roll_interval) = (0, 0, Duration::ZERO);
    let counters = Arc::new(SinkCounters::default());
    let mut sink = HdfsSink::new(c.clone(), counters.clone()).unwrap();
    let mut events = apache_events(6);
    events[1].headers.insert("host".into(), "../x".into());
    events[3].headers.insert("host".into(), "a/b".into());
    events[5].headers.remove("timestamp");
    run(sink.deliver(&events)).unwrap();
    run(sink.close()).unwrap();
    assert_eq!(counters.event_rejected.get(), 3);
    let rejected: Vec<String> = files(&base.join("out/rejected")).iter().flat_map(|p| text_lines(p)).collect();
    assert_eq!(rejected, body_lines(&[events[1].clone(), events[3].clone(), events[5].clone()]));
    let kept: Vec<String> = files(&base.join("out/web-1")).iter().flat_map(|p| text_lines(p)).collect();
    assert_eq!(kept, body_lines(&[events[0].clone(), events[2].clone(), events[4].clone()]));
    assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 1, "nothing outside the base");
    assert!(!base.join("x").exists() && !base.join("out/a").exists());

    c.on_rejected = OnRejected::Fail;
    let counters = Arc::new(SinkCounters::default());
    let mut failing = HdfsSink::new(c, counters.clone()).unwrap();
    let err = run(failing.deliver(&events)).unwrap_err();
    assert!(err.to_string().contains("3 events rejected"), "{err}");
    assert_eq!(counters.event_rejected.get(), 3);
}

#[test]
fn config_defaults_are_flumes_and_problems_are_named() {
    let c: HdfsConfig = ron::from_str("(path: \"out\")").unwrap();
    assert_eq!((c.file_prefix.as_str(), c.in_use_suffix.as_str()), ("FlumeData", ".tmp"));
    assert_eq!((c.roll_interval, c.roll_size, c.roll_count), (Duration::from_secs(30), 1024, 10));
    assert_eq!((c.idle_timeout, c.round, c.round_value, c.round_unit), (Duration::ZERO, false, 1, RoundUnit::Second));
    assert!(c.validate().is_empty());
    let bad: HdfsConfig = ron::from_str(
        "(path: \"out/%q\", file_prefix: \"a/b\", round_value: 61, round_unit: Minute, time_zone: Some(\"Mars/Base\"))",
    )
    .unwrap();
    let problems = bad.validate();
    assert_eq!(problems.len(), 4, "{problems:?}");
    assert!(ron::from_str::<HdfsConfig>("(path: \"out\", roll_sise: 1)").is_err());
}

#[test]
fn past_max_open_files_the_least_recently_written_file_is_closed() {
    let tmp = tempfile::tempdir().unwrap();
    let mut c = config(tmp.path(), "out/%{host}");
    (c.roll_count, c.roll_size, c.roll_interval, c.max_open_files) = (0, 0, Duration::ZERO, 2);
    let counters = Arc::new(SinkCounters::default());
    let mut sink = HdfsSink::new(c, counters.clone()).unwrap();
    let mut events = apache_events(9);
    for (i, e) in events.iter_mut().enumerate() {
        e.headers.insert("host".into(), format!("web-{}", i / 3));
    }
    run(sink.deliver(&events)).unwrap();
    // web-0 was closed when web-2 opened; web-1 and web-2 are open.
    let open: Vec<PathBuf> =
        files(&tmp.path().join("out")).into_iter().filter(|p| p.extension().unwrap() == "tmp").collect();
    assert_eq!(open.len(), 2, "{open:?}");
    assert!(open.iter().all(|p| !p.starts_with(tmp.path().join("out/web-0"))), "{open:?}");
    assert_eq!(counters.connection_closed.get(), 1);
    run(sink.close()).unwrap();
    for host in 0..3 {
        let lines: Vec<String> =
            files(&tmp.path().join(format!("out/web-{host}"))).iter().flat_map(|p| text_lines(p)).collect();
        assert_eq!(lines, body_lines(&events[host * 3..host * 3 + 3]));
    }
}

#[test]
fn a_dropped_sink_still_closes_and_renames_its_files() {
    let tmp = tempfile::tempdir().unwrap();
    let mut c = config(tmp.path(), "out");
    (c.roll_count, c.format) = (0, Format::Gzip);
    let sink = HdfsSink::new(c, Arc::new(SinkCounters::default()));
    let mut sink = sink.unwrap();
    let events = apache_events(7);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(sink.deliver(&events)).unwrap();
    // Dropped inside the runtime, as the runner drops a failed sink: closed on a blocking thread.
    rt.block_on(async move { drop(sink) });
    drop(rt); // waits for the blocking close
    let all = files(&tmp.path().join("out"));
    assert_eq!(all.len(), 1, "{all:?}");
    assert!(all[0].to_string_lossy().ends_with(".gz"), "{all:?}");
    assert_eq!(decompressed_lines(&all[0], Format::Gzip), (body_lines(&events), true));
}

#[test]
fn the_file_prefix_takes_escapes_and_separates_files() {
    let tmp = tempfile::tempdir().unwrap();
    let mut c = config(tmp.path(), "out/%Y");
    c.file_prefix = "%{host}-%H".into();
    (c.roll_count, c.roll_size, c.roll_interval) = (0, 0, Duration::ZERO);
    let events: Vec<Event> = apache_events(40)
        .into_iter()
        .enumerate()
        .map(|(i, e)| if i % 2 == 0 { e } else { e.with_header("host", "web-2") })
        .collect();
    // A header value may not leave the directory through the prefix either.
    let sneaky = apache_events(1).pop().unwrap().with_header("host", "../../etc/cron.d/x");
    let counters = Arc::new(SinkCounters::default());
    let mut sink = HdfsSink::new(c, counters.clone()).unwrap();
    run(async {
        sink.deliver(&events).await.unwrap();
        sink.deliver(std::slice::from_ref(&sneaky)).await.unwrap();
        sink.close().await.unwrap();
    });
    let names: Vec<String> = files(&tmp.path().join("out/2005"))
        .iter()
        .map(|p| p.file_name().unwrap().to_str().unwrap().split('.').next().unwrap().to_string())
        .collect();
    // 1133671664 s is 2005-12-04 04:47:44 UTC.
    assert_eq!(names, ["web-1-04", "web-2-04"]);
    for (host, file) in ["web-1", "web-2"].iter().zip(files(&tmp.path().join("out/2005"))) {
        let expected: Vec<Event> = events.iter().filter(|e| e.headers["host"] == *host).cloned().collect();
        assert_eq!(text_lines(&file), body_lines(&expected));
    }
    assert_eq!(counters.event_rejected.get(), 1);
    assert_eq!(text_lines(&files(&tmp.path().join("out/rejected"))[0]), body_lines(&[sneaky]));
}
