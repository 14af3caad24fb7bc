//! The numbers of `make bench` turned into text: medians and ranges for the
//! progress lines (`stats`), and the Markdown table of target/bench.md
//! (`table`) from the samples file scripts/bench.sh writes.
//!
//! The samples file has one `key=value` line per figure: numbers separated
//! by spaces (one per run), or a text (a label). A key given twice has the
//! values of both lines. A figure whose key is missing shows as `—`.

use std::collections::HashMap;
use std::fmt::Write as _;

/// The median (the mean of the middle two for an even count).
pub fn median(values: &[f64]) -> Option<f64> {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(v[n / 2]),
        _ => Some((v[n / 2 - 1] + v[n / 2]) / 2.0),
    }
}

fn min(values: &[f64]) -> Option<f64> {
    values.iter().copied().reduce(f64::min)
}

fn max(values: &[f64]) -> Option<f64> {
    values.iter().copied().reduce(f64::max)
}

/// `median UNIT (min–max, n=N)` of `values / div` with `dec` decimals; just
/// the value for one; `—` for none.
pub fn show(values: &[f64], div: f64, dec: usize, unit: &str) -> String {
    let Some(m) = median(values) else {
        return "—".to_owned();
    };
    if values.len() == 1 {
        return format!("{:.dec$}{unit}", m / div);
    }
    let (lo, hi) = (min(values).unwrap_or(m), max(values).unwrap_or(m));
    format!(
        "{:.dec$}{unit} ({:.dec$}–{:.dec$}, n={})",
        m / div,
        lo / div,
        hi / div,
        values.len()
    )
}

/// `a ÷ b` with two decimals and `×`; `—` when either is missing or b is 0.
pub fn ratio(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b != 0.0 => format!("{:.2}×", a / b),
        _ => "—".to_owned(),
    }
}

/// Whether a budget is met: `yes`, `**no**`, or `—` when a figure is
/// missing.
fn yesno(met: Option<bool>) -> String {
    match met {
        Some(true) => "yes".to_owned(),
        Some(false) => "**no**".to_owned(),
        None => "—".to_owned(),
    }
}

/// Bytes as MiB, two decimals.
fn mib(bytes: f64) -> String {
    format!("{:.2} MiB", bytes / 1_048_576.0)
}

/// kB (as /proc reports them) as MiB, two decimals.
fn kb(kb: f64) -> String {
    format!("{:.2} MiB", kb / 1024.0)
}

/// The samples file, parsed.
pub struct Samples {
    values: HashMap<String, String>,
}

impl Samples {
    pub fn parse(text: &str) -> Result<Samples, String> {
        let mut values: HashMap<String, String> = HashMap::new();
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let Some((key, value)) = line.split_once('=') else {
                return Err(format!("line {}: no '=' in {line:?}", i + 1));
            };
            let v = values.entry(key.trim().to_owned()).or_default();
            if !v.is_empty() {
                v.push(' ');
            }
            v.push_str(value.trim());
        }
        Ok(Samples { values })
    }

    /// The numbers under `key` (none when it is missing).
    pub fn nums(&self, key: &str) -> Result<Vec<f64>, String> {
        let Some(v) = self.values.get(key) else {
            return Ok(Vec::new());
        };
        v.split_whitespace()
            .map(|n| {
                n.parse::<f64>()
                    .map_err(|_| format!("{key}: not a number: {n:?}"))
            })
            .collect()
    }

    /// The one number under `key`, if any.
    pub fn num(&self, key: &str) -> Result<Option<f64>, String> {
        Ok(self.nums(key)?.first().copied())
    }

    /// The text under `key`, if any and not empty.
    pub fn text(&self, key: &str) -> Option<&str> {
        self.values
            .get(key)
            .map(String::as_str)
            .filter(|s| !s.is_empty())
    }
}

/// One table row: a figure, then its five cells.
struct Table(String);

impl Table {
    fn row(&mut self, cells: [&str; 6]) {
        let _ = writeln!(self.0, "| {} |", cells.join(" | "));
    }
}

/// The Markdown table of target/bench.md: header, separator, one row per
/// figure (sizes, memory, wake-ups, start, throughput, CPU, latency, one
/// message from a shell script, the spool).
pub fn table(s: &Samples) -> Result<String, String> {
    let mut t = Table(String::new());
    t.0.push_str("| figure | iotbox | mosquitto clients | ratio | budget | met? |\n");
    t.0.push_str("|---|---|---|---|---|---|\n");
    let n = |k: &str| s.num(k);
    let med = |k: &str| -> Result<Option<f64>, String> { Ok(median(&s.nums(k)?)) };
    let int = |k: &str, default: f64| -> Result<f64, String> { Ok(n(k)?.unwrap_or(default)) };
    let (msgs, size, conc) = (int("msgs", 0.0)?, int("size", 0.0)?, int("conc", 0.0)?);
    let (idle_secs, keepalive) = (int("idle_secs", 0.0)?, int("keepalive", 0.0)?);
    let cmp =
        |a: Option<f64>, b: Option<f64>, f: fn(f64, f64) -> bool| a.zip(b).map(|(a, b)| f(a, b));
    let le = |a: f64, b: f64| a <= b;

    // Sizes.
    let (x86, msub_prog, msub) = (n("size_x86")?, n("size_msub_prog")?, n("size_msub")?);
    let msub_cell = match (msub_prog, msub) {
        (Some(p), Some(all)) => format!(
            "mosquitto_sub {:.0} KiB + its libraries {} (dynamic; libc not counted)",
            p / 1024.0,
            mib(all - p)
        ),
        _ => "—".to_owned(),
    };
    t.row([
        "stripped static binary, x86_64 musl",
        &x86.map(mib).unwrap_or_else(|| "—".into()),
        &msub_cell,
        &ratio(x86, msub),
        "≤ 1.5 MiB",
        &yesno(x86.map(|x| x <= 1.5 * 1_048_576.0)),
    ]);
    t.row([
        "… the same binary, everything in (the local MQTT endpoint too): part two's budget",
        &x86.map(mib).unwrap_or_else(|| "—".into()),
        "—",
        "—",
        "≤ 2 MiB",
        &yesno(x86.map(|x| x <= 2.0 * 1_048_576.0)),
    ]);
    for (arch, make, budget_mib) in [("armv7", "pi-armv7", 1.5), ("aarch64", "pi-arm64", 2.0)] {
        let budget = format!("≤ {budget_mib} MiB");
        match (
            n(&format!("size_{arch}"))?,
            s.text(&format!("label_{arch}")),
        ) {
            (Some(size), label) => t.row([
                &format!(
                    "stripped static binary, {arch} ({})",
                    label.unwrap_or("label missing")
                ),
                &mib(size),
                "—",
                "—",
                &budget,
                &yesno(Some(size <= budget_mib * 1_048_576.0)),
            ]),
            (None, _) => t.row([
                &format!("stripped static binary, {arch}"),
                &format!("not built (make {make} or make cross-check)"),
                "—",
                "—",
                &budget,
                "—",
            ]),
        }
    }

    // Memory.
    let kb_or = |v: Option<f64>| v.map(kb).unwrap_or_else(|| "—".into());
    let (rss_d, rss_s) = (n("rss_d_idle")?, n("rss_s_idle")?);
    t.row([
        "RSS connected over mTLS, idle: VmRSS (pubsub vs mosquitto_sub)",
        &kb_or(rss_d),
        &kb_or(rss_s),
        &ratio(rss_d, rss_s),
        "≤ 2 MiB",
        &yesno(rss_d.map(|r| r <= 2048.0)),
    ]);
    let (hwm_d, hwm_s) = (n("hwm_d_idle")?, n("hwm_s_idle")?);
    t.row([
        "… VmHWM (peak) at the same moment",
        &kb_or(hwm_d),
        &kb_or(hwm_s),
        &ratio(hwm_d, hwm_s),
        "—",
        "—",
    ]);
    let (rss_after, hwm_after, mpub_hwm) = (n("rss_d_after")?, n("hwm_d_after")?, n("mpub_hwm")?);
    t.row([
        "RSS of pubsub after the throughput runs: VmRSS / VmHWM (vs mosquitto_pub -l's VmHWM during its run)",
        &format!("{} / {}", kb_or(rss_after), kb_or(hwm_after)),
        &format!("{} (VmHWM)", kb_or(mpub_hwm)),
        &ratio(hwm_after, mpub_hwm),
        "— (2 MiB is the idle budget)",
        "—",
    ]);

    // Idle wake-ups: a keep-alive ping costs two (the timer, PINGRESP); a
    // window of IDLE_SECS holds at most this many pings.
    let (wake_d, wake_s) = (s.nums("wake_d")?, s.nums("wake_s")?);
    let pings = ((idle_secs - 1.0) / keepalive.max(1.0)).floor() + 1.0;
    t.row([
        &format!(
            "idle wake-ups per {idle_secs} s, connected, keep-alive {keepalive} s (voluntary context switches)"
        ),
        &show(&wake_d, 1.0, 0, ""),
        &show(&wake_s, 1.0, 0, ""),
        &ratio(median(&wake_d), median(&wake_s)),
        &format!(
            "only the keep-alive ping: ≤ 1 ping per {keepalive} s (≤ 2 switches: timer, PINGRESP)"
        ),
        &yesno(max(&wake_d).map(|m| m <= 2.0 * pings)),
    ]);

    // Start.
    let (sd, ss) = (med("start_d")?, med("start_s")?);
    t.row([
        "exec → subscribed (pubsub: 'Subscription Success.'; mosquitto_sub: first message after SUBACK)",
        &show(&s.nums("start_d")?, 1e6, 2, " ms"),
        &show(&s.nums("start_s")?, 1e6, 2, " ms"),
        &ratio(sd, ss),
        "≤ mosquitto_sub",
        &yesno(cmp(sd, ss, le)),
    ]);
    t.row([
        "CPU exec → subscribed",
        &show(&s.nums("scpu_d")?, 1e6, 2, " ms"),
        &show(&s.nums("scpu_s")?, 1e6, 2, " ms"),
        &ratio(med("scpu_d")?, med("scpu_s")?),
        "— (AWS SDK sample: 60 ms)",
        "—",
    ]);

    // Throughput and CPU per 1000 messages.
    for q in [1, 0] {
        let (a, b) = (format!("tp_iotbox{q}"), format!("tp_mosq{q}"));
        let (ta, tb) = (med(&a)?, med(&b)?);
        let (budget, met) = if q == 1 {
            ("≥ mosquitto_pub -l", yesno(cmp(ta, tb, |a, b| a >= b)))
        } else {
            ("—", "—".to_owned())
        };
        t.row([
            &format!(
                "throughput QoS {q}, {msgs} × {size} B, end to end at a subscriber (publish socket, {conc} connections in flight, vs mosquitto_pub -l)"
            ),
            &show(&s.nums(&a)?, 1.0, 0, " msg/s"),
            &show(&s.nums(&b)?, 1.0, 0, " msg/s"),
            &ratio(ta, tb),
            budget,
            &met,
        ]);
    }
    t.row([
        "… QoS 1 through the socket with one client at a time (for scale; daemon CPU per 1000 messages)",
        &format!(
            "{}; {}",
            show(&s.nums("tp_iotbox1_c1")?, 1.0, 0, " msg/s"),
            show(&s.nums("cpuk_iotbox1_c1")?, 1e6, 2, " ms")
        ),
        "—",
        "—",
        "—",
        "—",
    ]);
    for q in [1, 0] {
        let (a, b) = (format!("cpuk_iotbox{q}"), format!("cpuk_mosq{q}"));
        let (ca, cb) = (med(&a)?, med(&b)?);
        let (budget, met) = if q == 1 {
            ("≤ mosquitto_pub's", yesno(cmp(ca, cb, le)))
        } else {
            ("—", "—".to_owned())
        };
        t.row([
            &format!("CPU per 1000 messages, QoS {q} (pubsub daemon vs mosquitto_pub -l)"),
            &show(&s.nums(&a)?, 1e6, 2, " ms"),
            &show(&s.nums(&b)?, 1e6, 2, " ms"),
            &ratio(ca, cb),
            budget,
            &met,
        ]);
    }

    // Latency.
    for (p, figure) in [
        (
            "50",
            "latency send → subscriber, p50, QoS 1, one at a time (publish socket vs mosquitto_pub -l)",
        ),
        ("99", "latency send → subscriber, p99"),
    ] {
        let (a, b) = (format!("lat{p}_d"), format!("lat{p}_s"));
        t.row([
            figure,
            &show(&s.nums(&a)?, 1e3, 0, " µs"),
            &show(&s.nums(&b)?, 1e3, 0, " µs"),
            &ratio(med(&a)?, med(&b)?),
            "—",
            "—",
        ]);
    }

    // One message from a shell script.
    let (od, os) = (med("os_d")?, med("os_s")?);
    t.row([
        "one message from a shell script, wall: `iotbox send` (exec → OK) vs `mosquitto_pub -m` (mTLS, QoS 1)",
        &show(&s.nums("os_d")?, 1e6, 2, " ms"),
        &show(&s.nums("os_s")?, 1e6, 2, " ms"),
        &ratio(od, os),
        "≥ 5× faster (ratio ≤ 0.20)",
        &yesno(cmp(od, os, |d, s| d * 5.0 <= s)),
    ]);
    let (ocd, ocs, oct) = (med("os_dc")?, med("os_sc")?, med("os_dt")?);
    let lt = |a: f64, b: f64| a < b;
    t.row([
        "… CPU of `iotbox send` itself",
        &show(&s.nums("os_dc")?, 1e6, 3, " ms"),
        &show(&s.nums("os_sc")?, 1e6, 3, " ms"),
        &ratio(ocd, ocs),
        "less CPU",
        &yesno(cmp(ocd, ocs, lt)),
    ]);
    t.row([
        "… CPU of `iotbox send` + the daemon's share for that message",
        &show(&s.nums("os_dt")?, 1e6, 3, " ms"),
        &show(&s.nums("os_sc")?, 1e6, 3, " ms"),
        &ratio(oct, ocs),
        "less CPU",
        &yesno(cmp(oct, ocs, lt)),
    ]);

    spool_rows(s, &mut t)?;
    local_rows(s, &mut t)?;
    Ok(t.0)
}

/// The local MQTT endpoint's rows: the same `mosquitto_pub -l` through the
/// daemon or through a mosquitto bridge to the broker (the second column
/// is the bridge, not a mosquitto client), and memory with local clients.
fn local_rows(s: &Samples, t: &mut Table) -> Result<(), String> {
    let n = |k: &str| s.num(k);
    let med = |k: &str| -> Result<Option<f64>, String> { Ok(median(&s.nums(k)?)) };
    let (msgs, size) = (n("msgs")?.unwrap_or(0.0), n("size")?.unwrap_or(0.0));
    let clients = n("lc_idle_clients")?.unwrap_or(0.0);
    let kb_or = |v: Option<f64>| v.map(kb).unwrap_or_else(|| "—".into());
    let kbs = |k: &str| -> Result<String, String> { Ok(show(&s.nums(k)?, 1024.0, 2, " MiB")) };

    let (tpd, tpb) = (med("lc_tp_iotbox")?, med("lc_tp_bridge")?);
    t.row([
        &format!(
            "local MQTT endpoint: `mosquitto_pub -l` QoS 1, {msgs} × {size} B on 127.0.0.1 TCP → the broker, first line → last arrival upstream (pubsub with its spool vs a mosquitto bridge)"
        ),
        &show(&s.nums("lc_tp_iotbox")?, 1.0, 0, " msg/s"),
        &show(&s.nums("lc_tp_bridge")?, 1.0, 0, " msg/s"),
        &ratio(tpd, tpb),
        "≥ 1.2× bridge",
        &yesno(tpd.zip(tpb).map(|(d, b)| d >= 1.2 * b)),
    ]);
    t.row([
        "… `mosquitto_pub -l` done (its last local PUBACK, then exit): first line → exit",
        &show(&s.nums("lc_done_iotbox")?, 1e6, 0, " ms"),
        &show(&s.nums("lc_done_bridge")?, 1e6, 0, " ms"),
        &ratio(med("lc_done_iotbox")?, med("lc_done_bridge")?),
        "—",
        "—",
    ]);
    t.row([
        "… CPU per 1000 messages (the daemon vs the bridge mosquitto, over the run)",
        &show(&s.nums("lc_cpuk_iotbox")?, 1e6, 2, " ms"),
        &show(&s.nums("lc_cpuk_bridge")?, 1e6, 2, " ms"),
        &ratio(med("lc_cpuk_iotbox")?, med("lc_cpuk_bridge")?),
        "—",
        "—",
    ]);
    let (hd, hb) = (med("lc_hwm_iotbox")?, med("lc_hwm_bridge")?);
    t.row([
        "… RSS under that load: VmHWM (the run's peak, a fresh process each run); VmRSS just after; ratio of the VmHWM",
        &format!("{} peak; {} after", kbs("lc_hwm_iotbox")?, kbs("lc_rss_iotbox")?),
        &format!("{} peak; {} after", kbs("lc_hwm_bridge")?, kbs("lc_rss_bridge")?),
        &ratio(hd, hb),
        "≤ 0.25× bridge",
        &yesno(hd.zip(hb).map(|(d, b)| d <= 0.25 * b)),
    ]);
    let (id, ib) = (n("lc_idle_rss_iotbox")?, n("lc_idle_rss_bridge")?);
    t.row([
        &format!(
            "RSS idle, spool on, {clients} local MQTT clients connected (UNIX socket, each subscribed): VmRSS (VmHWM); the bridge with the same clients for scale"
        ),
        &format!("{} ({})", kb_or(id), kb_or(n("lc_idle_hwm_iotbox")?)),
        &format!("{} ({})", kb_or(ib), kb_or(n("lc_idle_hwm_bridge")?)),
        &ratio(id, ib),
        "≤ 3 MiB",
        &yesno(id.map(|r| r <= 3072.0)),
    ]);
    Ok(())
}

/// The spool's rows: the publish socket into the spool with the broker out
/// of reach (rate, syncs, bytes), the same in memory, recovery of a full
/// spool, memory with the spool on. No mosquitto counterpart: where the
/// ratio column is used, the figure says what it divides.
fn spool_rows(s: &Samples, t: &mut Table) -> Result<(), String> {
    let n = |k: &str| s.num(k);
    let med = |k: &str| -> Result<Option<f64>, String> { Ok(median(&s.nums(k)?)) };
    let (msgs, size, conc) = (n("sp_msgs")?, n("size")?, n("conc")?);
    let (msgs, size, conc) = (
        msgs.unwrap_or(0.0),
        size.unwrap_or(0.0),
        conc.unwrap_or(0.0),
    );
    let conc_hi = n("sp_conc_hi")?.unwrap_or(0.0);

    let tp = med("sp_tp_disk")?;
    t.row([
        &format!(
            "publish socket → spool, {msgs} × {size} B, write + fdatasync per loop turn, broker out of reach (each message answered QUEUED after its sync; {conc} connections in flight)"
        ),
        &show(&s.nums("sp_tp_disk")?, 1.0, 0, " msg/s"),
        "—",
        "—",
        "≥ 20000 msg/s",
        &yesno(tp.map(|v| v >= 20_000.0)),
    ]);
    let synck = med("sp_synck_disk")?;
    t.row([
        "… syncs per 1000 messages (the daemon's exit line: fdatasyncs, and directory fsyncs for new files)",
        &show(&s.nums("sp_synck_disk")?, 1000.0, 2, ""),
        "—",
        "—",
        "≤ 2",
        &yesno(synck.map(|v| v / 1000.0 <= 2.0)),
    ]);
    let wb = med("sp_wb_disk")?;
    t.row([
        "… bytes written per message: /proc/PID/io write_bytes over the run (what went toward the block layer, whole 4 KiB pages)",
        &show(&s.nums("sp_wb_disk")?, 1.0, 0, " B"),
        "—",
        "—",
        "≤ 300 B",
        &yesno(wb.map(|v| v <= 300.0)),
    ]);
    t.row([
        "… bytes handed to write(2) per message (the daemon's exit line; wchar-based: the record, 27 B + topic + payload)",
        &show(&s.nums("sp_wc_disk")?, 1.0, 0, " B"),
        "—",
        "—",
        "—",
        "—",
    ]);
    let none = med("sp_tp_none")?;
    t.row([
        "… the same rate with `--spool_dir none` (memory only); ratio = spool on ÷ none",
        &show(&s.nums("sp_tp_none")?, 1.0, 0, " msg/s"),
        "—",
        &ratio(tp, none),
        "—",
        "—",
    ]);
    t.row([
        &format!(
            "… for scale, {conc_hi} connections in flight: rate; syncs per 1000 messages; write_bytes per message"
        ),
        &format!(
            "{}; {}; {}",
            show(&s.nums("sp_tp_disk_hi")?, 1.0, 0, " msg/s"),
            show(&s.nums("sp_synck_disk_hi")?, 1000.0, 2, ""),
            show(&s.nums("sp_wb_disk_hi")?, 1.0, 0, " B")
        ),
        "—",
        "—",
        "—",
        "—",
    ]);

    // Recovery of a full spool.
    let second = |v: Option<f64>| yesno(v.map(|v| v <= 1e9));
    let what = match (n("rec_bytes")?, n("rec_msgs")?, n("rec_segs")?) {
        (Some(b), Some(m), Some(f)) => format!("{}, {m} × {size} B messages in {f} files", mib(b)),
        _ => "not built".to_owned(),
    };
    t.row([
        &format!("recovery of a full spool ({what}): `iotbox spool DIR`, wall, page cache warm"),
        &show(&s.nums("rec_warm")?, 1e6, 0, " ms"),
        "—",
        "—",
        "≤ 1 s",
        &second(med("rec_warm")?),
    ]);
    let cold = n("rec_cold")?;
    t.row([
        "… the same once after `echo 3 > /proc/sys/vm/drop_caches` (cold)",
        &match (cold, s.text("rec_cold_why")) {
            (Some(c), _) => show(&[c], 1e6, 0, " ms"),
            (None, Some(why)) => why.to_owned(),
            (None, None) => "—".to_owned(),
        },
        "—",
        "—",
        "≤ 1 s",
        &second(cold),
    ]);
    t.row([
        "… the daemon's own figure at start ('both directions read in T ms'), page cache warm",
        &show(&s.nums("rec_d")?, 1.0, 0, " ms"),
        "—",
        "—",
        "≤ 1 s",
        &yesno(med("rec_d")?.map(|v| v <= 1000.0)),
    ]);

    // Memory with the spool on.
    let kb_or = |v: Option<f64>| v.map(kb).unwrap_or_else(|| "—".into());
    let idle = n("rss_d_idle")?;
    t.row([
        "RSS with the spool on: connected and idle, VmRSS (the idle row's daemon: every daemon has --spool_dir); peak VmHWM during the publish socket → spool runs; VmHWM after recovering the full spool",
        &format!(
            "{} idle; {} peak; {} full spool",
            kb_or(idle),
            kb_or(med("sp_hwm_disk")?),
            kb_or(med("rec_hwm")?)
        ),
        "—",
        "—",
        "≤ 3 MiB idle",
        &yesno(idle.map(|r| r <= 3072.0)),
    ]);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_and_show() {
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(show(&[1_500_000.0], 1e6, 2, " ms"), "1.50 ms");
        assert_eq!(
            show(&[3e6, 1e6, 2e6], 1e6, 2, " ms"),
            "2.00 ms (1.00–3.00, n=3)"
        );
        assert_eq!(show(&[7.0, 9.0], 1.0, 0, ""), "8 (7–9, n=2)");
        assert_eq!(show(&[], 1.0, 0, ""), "—");
    }

    #[test]
    fn ratio_and_budgets() {
        assert_eq!(ratio(Some(1.0), Some(4.0)), "0.25×");
        assert_eq!(ratio(Some(1.0), Some(0.0)), "—");
        assert_eq!(ratio(None, Some(1.0)), "—");
        assert_eq!(yesno(Some(true)), "yes");
        assert_eq!(yesno(Some(false)), "**no**");
        assert_eq!(mib(1_572_864.0), "1.50 MiB");
        assert_eq!(kb(2048.0), "2.00 MiB");
    }

    #[test]
    fn samples_repeat_and_table_rows() {
        let s = Samples::parse(
            "size_x86=1048576\nsize_msub_prog=51200\nsize_msub=2097152\n\
             wake_d=2\nwake_d=0\nwake_s=4 6\nidle_secs=10\nkeepalive=60\n\
             label_aarch64=aarch64-unknown-linux-musl; built x\nsize_aarch64=1000000\n",
        )
        .unwrap();
        assert_eq!(s.nums("wake_d").unwrap(), vec![2.0, 0.0]);
        let t = table(&s).unwrap();
        let rows: Vec<&str> = t.lines().collect();
        assert_eq!(
            rows[2],
            "| stripped static binary, x86_64 musl | 1.00 MiB | mosquitto_sub 50 KiB + its libraries 1.95 MiB (dynamic; libc not counted) | 0.50× | ≤ 1.5 MiB | yes |"
        );
        assert_eq!(
            rows[3],
            "| … the same binary, everything in (the local MQTT endpoint too): part two's budget | 1.00 MiB | — | — | ≤ 2 MiB | yes |"
        );
        assert_eq!(
            rows[4],
            "| stripped static binary, armv7 | not built (make pi-armv7 or make cross-check) | — | — | ≤ 1.5 MiB | — |"
        );
        assert_eq!(
            rows[5],
            "| stripped static binary, aarch64 (aarch64-unknown-linux-musl; built x) | 0.95 MiB | — | — | ≤ 2 MiB | yes |"
        );
        assert!(
            rows[9].ends_with("| 1 (0–2, n=2) | 5 (4–6, n=2) | 0.20× | only the keep-alive ping: ≤ 1 ping per 60 s (≤ 2 switches: timer, PINGRESP) | yes |"),
            "{}",
            rows[9]
        );
        assert!(rows.iter().skip(2).all(|r| r.matches(" | ").count() == 5));
        assert!(Samples::parse("nonsense").is_err());
    }

    #[test]
    fn spool_rows() {
        let s = Samples::parse(
            "sp_msgs=20000\nsize=100\nconc=16\nsp_conc_hi=256\n\
             sp_tp_disk=22000 24000 23000\nsp_tp_none=30000 32000 31000\n\
             sp_synck_disk=63000 62500 64100\nsp_wb_disk=390 395 380\nsp_wc_disk=134 134 134\n\
             sp_hwm_disk=1600\nrss_d_idle=1600\nrec_bytes=67108952\nrec_msgs=456520\nrec_segs=64\n\
             rec_warm=250000000 260000000\nrec_cold=\n\
             rec_cold_why=not measured: dropping the page cache needs root\nrec_d=204 210\n",
        )
        .unwrap();
        let t = table(&s).unwrap();
        let row = |start: &str| {
            t.lines()
                .find(|l| l.starts_with(&format!("| {start}")))
                .unwrap_or_else(|| panic!("no row {start:?} in\n{t}"))
                .to_owned()
        };
        assert!(
            row("publish socket → spool")
                .ends_with("| 23000 msg/s (22000–24000, n=3) | — | — | ≥ 20000 msg/s | yes |")
        );
        assert!(
            row("… syncs per 1000")
                .ends_with("| 63.00 (62.50–64.10, n=3) | — | — | ≤ 2 | **no** |")
        );
        assert!(
            row("… bytes written per message")
                .ends_with("| 390 B (380–395, n=3) | — | — | ≤ 300 B | **no** |")
        );
        assert!(
            row("… the same rate")
                .ends_with("| 31000 msg/s (30000–32000, n=3) | — | 0.74× | — | — |")
        );
        assert!(row("… for scale, 256").contains("| —; —; — |"));
        assert!(
            row("recovery of a full spool (64.00 MiB, 456520 × 100 B messages in 64 files)")
                .ends_with("| 255 ms (250–260, n=2) | — | — | ≤ 1 s | yes |")
        );
        assert!(
            row("… the same once after").ends_with(
                "| not measured: dropping the page cache needs root | — | — | ≤ 1 s | — |"
            )
        );
        assert!(
            row("… the daemon's own figure")
                .ends_with("| 207 ms (204–210, n=2) | — | — | ≤ 1 s | yes |")
        );
        assert!(row("RSS with the spool on").ends_with(
            "| 1.56 MiB idle; 1.56 MiB peak; — full spool | — | — | ≤ 3 MiB idle | yes |"
        ));
        assert!(t.lines().skip(2).all(|r| r.matches(" | ").count() == 5));
    }

    #[test]
    fn local_rows() {
        let s = Samples::parse(
            "msgs=20000\nsize=100\nlc_idle_clients=10\n\
             lc_tp_iotbox=12000 13000 14000\nlc_tp_bridge=10000 10000 11000\n\
             lc_done_iotbox=1500000000\nlc_done_bridge=1800000000\n\
             lc_cpuk_iotbox=20000000\nlc_cpuk_bridge=40000000\n\
             lc_hwm_iotbox=2048 3072\nlc_hwm_bridge=11264 11264\nlc_rss_iotbox=2048\nlc_rss_bridge=10240\n\
             lc_idle_rss_iotbox=2560\nlc_idle_hwm_iotbox=2600\nlc_idle_rss_bridge=10240\n",
        )
        .unwrap();
        let t = table(&s).unwrap();
        let row = |start: &str| {
            t.lines()
                .find(|l| l.starts_with(&format!("| {start}")))
                .unwrap_or_else(|| panic!("no row {start:?} in\n{t}"))
                .to_owned()
        };
        assert!(row("local MQTT endpoint: `mosquitto_pub -l` QoS 1, 20000 × 100 B").ends_with(
            "| 13000 msg/s (12000–14000, n=3) | 10000 msg/s (10000–11000, n=3) | 1.30× | ≥ 1.2× bridge | yes |"
        ));
        assert!(
            row("… `mosquitto_pub -l` done")
                .ends_with("| 1500 ms | 1800 ms | 0.83× | — | — |")
        );
        assert!(row("… CPU per 1000 messages (the daemon vs the bridge")
            .ends_with("| 20.00 ms | 40.00 ms | 0.50× | — | — |"));
        assert!(row("… RSS under that load").ends_with(
            "| 2.50 MiB (2.00–3.00, n=2) peak; 2.00 MiB after | 11.00 MiB (11.00–11.00, n=2) peak; 10.00 MiB after | 0.23× | ≤ 0.25× bridge | yes |"
        ));
        assert!(row("RSS idle, spool on, 10 local MQTT clients").ends_with(
            "| 2.50 MiB (2.54 MiB) | 10.00 MiB (—) | 0.25× | ≤ 3 MiB | yes |"
        ));
        assert!(t.lines().skip(2).all(|r| r.matches(" | ").count() == 5));
    }
}
