//! The device certificate's expiry, pure: its notAfter read from the X.509
//! DER by a minimal DER walker, the days left, and the log line that warns
//! from 30 days before.
//!
//! The walker reads only the path to `validity.notAfter` and accepts only
//! strict DER there (definite, minimal lengths; the tags X.509 prescribes);
//! anything else is `None`. Every read is bounds-checked: no input panics.

use crate::output::civil_from_days;

/// Warn this many days before the certificate expires (inclusive).
pub const WARN_DAYS: u64 = 30;

const SECS_PER_DAY: u64 = 86_400;

const SEQUENCE: u8 = 0x30;
const INTEGER: u8 = 0x02;
const VERSION: u8 = 0xA0;
const UTC_TIME: u8 = 0x17;
const GENERALIZED_TIME: u8 = 0x18;

/// The certificate's notAfter as Unix seconds.
///
/// ```text
/// Certificate ::= SEQUENCE { tbsCertificate, ... }
/// tbsCertificate ::= SEQUENCE { [0] version OPTIONAL, serialNumber INTEGER,
///     signature SEQUENCE, issuer SEQUENCE, validity SEQUENCE, ... }
/// validity ::= SEQUENCE { notBefore Time, notAfter Time }
/// ```
///
/// # Returns
/// `None` if `der` is not one certificate in that shape (trailing bytes
/// after it included), or its notAfter is not a valid UTCTime or
/// GeneralizedTime, or lies before 1970.
pub fn not_after(der: &[u8]) -> Option<u64> {
    let (certificate, rest) = expect(der, SEQUENCE)?;
    if !rest.is_empty() {
        return None;
    }
    let (mut tbs, _signature) = expect(certificate, SEQUENCE)?;
    if tbs.first() == Some(&VERSION) {
        tbs = expect(tbs, VERSION)?.1;
    }
    let (_serial, tbs) = expect(tbs, INTEGER)?;
    let (_algorithm, tbs) = expect(tbs, SEQUENCE)?;
    let (_issuer, tbs) = expect(tbs, SEQUENCE)?;
    let (validity, _subject_and_more) = expect(tbs, SEQUENCE)?;
    let (before_tag, before, validity) = tlv(validity)?;
    parse_time(before_tag, before)?;
    let (after_tag, after, validity) = tlv(validity)?;
    if !validity.is_empty() {
        return None;
    }
    parse_time(after_tag, after)
}

/// Whole days from `now` until `not_after`, rounded down: negative once
/// expired (-1 during the first day after).
pub fn days_left(not_after: u64, now: u64) -> i64 {
    let diff = i128::from(not_after) - i128::from(now);
    // |diff| / 86400 < 2^64 / 86400 < 2^48: always fits.
    diff.div_euclid(i128::from(SECS_PER_DAY)) as i64
}

/// The log line about the certificate's expiry, from [`WARN_DAYS`] days
/// before it, to the second (inclusive); `None` while more time is left.
///
/// The certificate is valid up to and including its notAfter second
/// (RFC 5280), expired after it.
pub fn expiry_warning(not_after: u64, now: u64) -> Option<String> {
    let days = days_left(not_after, now);
    if not_after.saturating_sub(now) > WARN_DAYS * SECS_PER_DAY {
        return None;
    }
    let date = utc_minute(not_after);
    if now <= not_after {
        let when = match days {
            0 => "in less than a day".to_owned(),
            1 => "in 1 day".to_owned(),
            n => format!("in {n} days"),
        };
        Some(format!(
            "the device certificate expires {when} ({date}): rotate it (new files, then SIGHUP or `systemctl reload iotbox`)"
        ))
    } else {
        let ago = match (now - not_after) / SECS_PER_DAY {
            0 => "less than a day ago".to_owned(),
            1 => "1 day ago".to_owned(),
            n => format!("{n} days ago"),
        };
        Some(format!(
            "the device certificate expired {ago} ({date}): AWS IoT refuses it; install a new one and reload (SIGHUP or `systemctl reload iotbox`)"
        ))
    }
}

/// `YYYY-MM-DD hh:mm UTC`.
pub fn utc_minute(secs: u64) -> String {
    let days = (secs / SECS_PER_DAY) as i64;
    let rem = secs % SECS_PER_DAY;
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02} UTC",
        rem / 3600,
        rem / 60 % 60
    )
}

/// One TLV with the tag `tag`: (its contents, what follows it).
fn expect(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    match tlv(input)? {
        (t, contents, rest) if t == tag => Some((contents, rest)),
        _ => None,
    }
}

/// One TLV: (tag, contents, what follows). Single-byte tags only (all that
/// this path of a certificate has); definite lengths in the shortest form,
/// short or long with 1 to 4 length bytes.
fn tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, input) = input.split_first()?;
    if tag & 0x1F == 0x1F {
        return None;
    }
    let (&first, mut input) = input.split_first()?;
    let len = match first {
        0..=0x7F => usize::from(first),
        0x81..=0x84 => {
            let n = usize::from(first & 0x7F);
            let bytes = input.get(..n)?;
            input = input.get(n..)?;
            if bytes.first() == Some(&0) {
                return None;
            }
            let len = bytes.iter().fold(0u32, |acc, &b| (acc << 8) | u32::from(b));
            if len < 0x80 {
                return None;
            }
            usize::try_from(len).ok()?
        }
        _ => return None,
    };
    let contents = input.get(..len)?;
    let rest = input.get(len..)?;
    Some((tag, contents, rest))
}

/// A UTCTime (`YYMMDDhhmmssZ`, YY < 50 is 20YY) or GeneralizedTime
/// (`YYYYMMDDhhmmssZ`) as Unix seconds; `None` before 1970.
fn parse_time(tag: u8, text: &[u8]) -> Option<u64> {
    let (year, rest) = match (tag, text.len()) {
        (UTC_TIME, 13) => {
            let yy = digits(text, 0, 2)?;
            (if yy < 50 { 2000 + yy } else { 1900 + yy }, text.get(2..)?)
        }
        (GENERALIZED_TIME, 15) => (digits(text, 0, 4)?, text.get(4..)?),
        _ => return None,
    };
    if rest.get(10) != Some(&b'Z') {
        return None;
    }
    let month = digits(rest, 0, 2)?;
    let day = digits(rest, 2, 2)?;
    let hour = digits(rest, 4, 2)?;
    let minute = digits(rest, 6, 2)?;
    let second = digits(rest, 8, 2)?;
    if !(1..=12).contains(&month)
        || day < 1
        || day > days_in_month(year, month)
        || hour > 23
        || minute > 59
        || second > 59
    {
        return None;
    }
    let days = days_from_civil(i64::from(year), month, day);
    let secs = days * 86_400 + i64::from(hour * 3600 + minute * 60 + second);
    u64::try_from(secs).ok()
}

/// `len` ASCII digits of `text` from `at` as a number.
fn digits(text: &[u8], at: usize, len: usize) -> Option<u32> {
    text.get(at..at.checked_add(len)?)?
        .iter()
        .try_fold(0u32, |acc, &b| {
            b.is_ascii_digit().then(|| acc * 10 + u32::from(b - b'0'))
        })
}

fn is_leap(year: u32) -> bool {
    year % 4 == 0 && (year % 100 != 0 || year % 400 == 0)
}

fn days_in_month(year: u32, month: u32) -> u32 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's
/// days_from_civil).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(month);
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{CertificateParams, DnType, KeyPair};
    use time::{Date, Month, OffsetDateTime, PrimitiveDateTime, Time};

    const DAY: u64 = SECS_PER_DAY;

    fn at(year: i32, month: Month, day: u8, h: u8, m: u8, s: u8) -> OffsetDateTime {
        PrimitiveDateTime::new(
            Date::from_calendar_date(year, month, day).unwrap(),
            Time::from_hms(h, m, s).unwrap(),
        )
        .assume_utc()
    }

    /// A self-signed certificate (v3, ECDSA P-256) valid from `not_before`
    /// until `not_after`: its DER.
    fn certificate(not_before: OffsetDateTime, not_after: OffsetDateTime) -> Vec<u8> {
        let mut params = CertificateParams::new(vec!["device".to_owned()]).unwrap();
        params.distinguished_name.push(DnType::CommonName, "device");
        params.not_before = not_before;
        params.not_after = not_after;
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        params.self_signed(&key).unwrap().der().to_vec()
    }

    fn contains(haystack: &[u8], needle: &[u8]) -> bool {
        haystack.windows(needle.len()).any(|w| w == needle)
    }

    fn expected(t: OffsetDateTime) -> Option<u64> {
        Some(u64::try_from(t.unix_timestamp()).unwrap())
    }

    #[test]
    fn not_after_of_utc_time_certificates() {
        let start = at(2024, Month::March, 1, 12, 0, 0);
        let end = at(2030, Month::June, 15, 8, 30, 15);
        let der = certificate(start, end);
        assert!(contains(&der, b"\x17\x0d300615083015Z"));
        assert_eq!(not_after(&der), expected(end));
        assert_eq!(not_after(&der), Some(1_907_742_615));

        let end = at(2049, Month::December, 31, 23, 59, 59);
        let der = certificate(start, end);
        assert!(contains(&der, b"\x17\x0d491231235959Z"));
        assert_eq!(not_after(&der), expected(end));
    }

    #[test]
    fn not_after_of_generalized_time_from_2050() {
        let end = at(2050, Month::January, 1, 0, 0, 0);
        let der = certificate(at(2024, Month::March, 1, 0, 0, 0), end);
        assert!(contains(&der, b"\x18\x0f20500101000000Z"));
        assert_eq!(not_after(&der), expected(end));
        assert_eq!(not_after(&der), Some(2_524_608_000));
    }

    #[test]
    fn not_after_of_the_last_century() {
        let end = at(1999, Month::December, 31, 12, 0, 0);
        let der = certificate(at(1998, Month::January, 1, 0, 0, 0), end);
        assert!(contains(&der, b"\x17\x0d991231120000Z"));
        assert_eq!(not_after(&der), expected(end));
    }

    /// A TLV with the length in the given number of length bytes (0: short).
    fn tlv_with(tag: u8, contents: &[u8], length_bytes: usize) -> Vec<u8> {
        let mut out = vec![tag];
        if length_bytes == 0 {
            out.push(contents.len() as u8);
        } else {
            out.push(0x80 | length_bytes as u8);
            let len = (contents.len() as u32).to_be_bytes();
            out.extend_from_slice(&len[4 - length_bytes..]);
        }
        out.extend_from_slice(contents);
        out
    }

    /// A certificate-shaped DER (only the path the walker reads is real),
    /// its issuer `issuer_len` bytes long, every length in the shortest form.
    fn skeleton(issuer_len: usize, not_after: &[u8]) -> Vec<u8> {
        let short = |n: usize| match n {
            0..=0x7F => 0,
            0x80..=0xFF => 1,
            0x100..=0xFFFF => 2,
            0x1_0000..=0xFF_FFFF => 3,
            _ => 4,
        };
        let t = |tag: u8, c: &[u8]| tlv_with(tag, c, short(c.len()));
        let validity = [t(UTC_TIME, b"240101000000Z"), not_after.to_vec()].concat();
        let tbs = [
            t(VERSION, &t(INTEGER, &[2])),
            t(INTEGER, &[1]),
            t(SEQUENCE, &[]),
            t(SEQUENCE, &vec![0x55; issuer_len]),
            t(SEQUENCE, &validity),
            t(SEQUENCE, &[]),
        ]
        .concat();
        t(SEQUENCE, &[t(SEQUENCE, &tbs), t(SEQUENCE, &[])].concat())
    }

    #[test]
    fn every_long_length_form_is_read() {
        let end = tlv_with(GENERALIZED_TIME, b"20270101000000Z", 0);
        // 0x81 (issuer), 0x82, 0x83 and 0x84 (the outer sequences).
        for issuer in [0x90, 0x300, 0x1_0000, 0x100_0000] {
            assert_eq!(
                not_after(&skeleton(issuer, &end)),
                Some(1_798_761_600),
                "{issuer}"
            );
        }
    }

    #[test]
    fn what_is_not_strict_der_is_refused() {
        let good = tlv_with(UTC_TIME, b"270101000000Z", 0);
        assert_eq!(not_after(&skeleton(3, &good)), Some(1_798_761_600));
        // Lengths not in the shortest form.
        assert_eq!(
            not_after(&skeleton(3, &tlv_with(UTC_TIME, b"270101000000Z", 1))),
            None
        );
        let short = skeleton(3, &good);
        let padded = [&[0x30, 0x82, 0x00][..], &short[1..]].concat();
        assert_eq!(not_after(&[&[0x30, 0x81][..], &short[1..]].concat()), None);
        assert_eq!(not_after(&padded), None);
        // Indefinite length, five length bytes.
        let mut indefinite = skeleton(3, &good);
        indefinite[1] = 0x80;
        assert_eq!(not_after(&indefinite), None);
        assert_eq!(tlv(&[0x30, 0x85, 0, 0, 0, 0, 1, 0]), None);
        // Trailing bytes after the certificate.
        let mut trailing = skeleton(3, &good);
        trailing.push(0);
        assert_eq!(not_after(&trailing), None);
        // Times that are not exactly YYMMDDhhmmssZ / YYYYMMDDhhmmssZ.
        for (tag, text) in [
            (UTC_TIME, &b"2701010000Z"[..]),
            (UTC_TIME, b"270101000000+0100"),
            (UTC_TIME, b"2701010000000"),
            (UTC_TIME, b"27010100000 Z"),
            (UTC_TIME, b"271301000000Z"),
            (UTC_TIME, b"270230000000Z"),
            (UTC_TIME, b"250229000000Z"),
            (UTC_TIME, b"270101240000Z"),
            (UTC_TIME, b"270101006000Z"),
            (UTC_TIME, b"270101000060Z"),
            (UTC_TIME, b"20270101000000Z"),
            (GENERALIZED_TIME, b"270101000000Z"),
            (GENERALIZED_TIME, b"20270101000000.5Z"),
            (GENERALIZED_TIME, b"19691231235959Z"),
            (0x04, b"270101000000Z"),
        ] {
            assert_eq!(
                not_after(&skeleton(3, &tlv_with(tag, text, 0))),
                None,
                "{text:?}"
            );
        }
        assert_eq!(
            not_after(&skeleton(3, &tlv_with(UTC_TIME, b"240229000000Z", 0))),
            Some(1_709_164_800)
        );
        assert_eq!(
            not_after(&skeleton(
                3,
                &tlv_with(GENERALIZED_TIME, b"19700101000000Z", 0)
            )),
            Some(0)
        );
    }

    /// xorshift64: the mutations' randomness, reproducible.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n.max(1) as u64) as usize
        }
    }

    #[test]
    fn no_input_panics() {
        let der = certificate(
            at(2024, Month::March, 1, 0, 0, 0),
            at(2030, Month::June, 15, 0, 0, 0),
        );
        assert!(not_after(&der).is_some());
        for len in 0..der.len() {
            assert_eq!(not_after(&der[..len]), None, "prefix of {len} bytes");
        }
        let seeds = [
            der,
            skeleton(0x90, &tlv_with(GENERALIZED_TIME, b"20500101000000Z", 0)),
        ];
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        let mut parsed = [0u32; 2];
        for _ in 0..20_000 {
            let mut input = seeds[rng.below(seeds.len())].clone();
            for _ in 0..1 + rng.below(4) {
                let pos = rng.below(input.len());
                match rng.below(6) {
                    0 => input.truncate(pos),
                    1 if pos < input.len() => input[pos] ^= 1 << rng.below(8),
                    2 if pos < input.len() => input[pos] = rng.next() as u8,
                    3 => input.insert(pos, rng.next() as u8),
                    4 if pos < input.len() => {
                        input.remove(pos);
                    }
                    // A length byte made long-form or huge.
                    _ if pos < input.len() => {
                        input[pos] = [0x80, 0x81, 0x84, 0xFF][rng.below(4)];
                    }
                    _ => {}
                }
            }
            parsed[usize::from(not_after(&input).is_some())] += 1;
        }
        // Both outcomes: the mutations reach past the first byte.
        assert!(parsed[0] > 1000 && parsed[1] > 1000, "{parsed:?}");
        for _ in 0..5_000 {
            let noise: Vec<u8> = (0..rng.below(64)).map(|_| rng.next() as u8).collect();
            let _ = not_after(&noise);
        }
    }

    #[test]
    fn days_left_rounds_down() {
        let end = 2_000_000_000;
        assert_eq!(days_left(end, end - 31 * DAY), 31);
        assert_eq!(days_left(end, end - 30 * DAY), 30);
        assert_eq!(days_left(end, end - 30 * DAY + 1), 29);
        assert_eq!(days_left(end, end - DAY), 1);
        assert_eq!(days_left(end, end - 1), 0);
        assert_eq!(days_left(end, end), 0);
        assert_eq!(days_left(end, end + 1), -1);
        assert_eq!(days_left(end, end + DAY), -1);
        assert_eq!(days_left(end, end + DAY + 1), -2);
        assert_eq!(days_left(0, u64::MAX), -((u64::MAX / DAY) as i64) - 1);
        assert_eq!(days_left(u64::MAX, 0), (u64::MAX / DAY) as i64);
    }

    #[test]
    fn the_warning_starts_30_days_before() {
        let end = 1_798_761_600; // 2027-01-01 00:00 UTC
        assert_eq!(expiry_warning(end, end - 31 * DAY), None);
        assert_eq!(expiry_warning(end, end - 30 * DAY - 1), None);
        assert_eq!(
            expiry_warning(end, end - 30 * DAY).unwrap(),
            "the device certificate expires in 30 days (2027-01-01 00:00 UTC): rotate it (new files, then SIGHUP or `systemctl reload iotbox`)"
        );
        let one = expiry_warning(end, end - DAY).unwrap();
        assert!(
            one.starts_with(
                "the device certificate expires in 1 day (2027-01-01 00:00 UTC): rotate it"
            ),
            "{one}"
        );
        let zero = expiry_warning(end, end).unwrap();
        assert!(
            zero.starts_with("the device certificate expires in less than a day (2027-01-01"),
            "{zero}"
        );
        let just = expiry_warning(end, end + 1).unwrap();
        assert!(just.starts_with("the device certificate expired less than a day ago (2027-01-01 00:00 UTC): AWS IoT refuses it"), "{just}");
        assert_eq!(
            expiry_warning(end, end + DAY).unwrap(),
            "the device certificate expired 1 day ago (2027-01-01 00:00 UTC): AWS IoT refuses it; install a new one and reload (SIGHUP or `systemctl reload iotbox`)"
        );
        let three = expiry_warning(end, end + 3 * DAY + 5).unwrap();
        assert!(
            three.starts_with("the device certificate expired 3 days ago"),
            "{three}"
        );
        assert_eq!(expiry_warning(u64::MAX, 0), None);
        assert!(expiry_warning(0, u64::MAX).is_some());
    }

    #[test]
    fn dates_are_written_by_hand() {
        assert_eq!(utc_minute(0), "1970-01-01 00:00 UTC");
        assert_eq!(
            utc_minute(1_709_164_800 + 13 * 3600 + 59 * 60 + 59),
            "2024-02-29 13:59 UTC"
        );
        assert_eq!(utc_minute(4_107_542_400), "2100-03-01 00:00 UTC");
        assert_eq!(utc_minute(4_107_542_400 - 1), "2100-02-28 23:59 UTC");
        assert_eq!(utc_minute(951_782_400), "2000-02-29 00:00 UTC");
        // Every day from 1970 to 2200 against the time crate, both ways.
        for day in 0..84_000i64 {
            let t = OffsetDateTime::from_unix_timestamp(day * 86_400).unwrap();
            let civil = (
                i64::from(t.year()),
                u32::from(u8::from(t.month())),
                u32::from(t.day()),
            );
            assert_eq!(civil_from_days(day), civil);
            assert_eq!(days_from_civil(civil.0, civil.1, civil.2), day);
        }
        assert!(utc_minute(u64::MAX).ends_with(" UTC"));
    }
}
