#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| iotbox_fuzz::checks::check_local_client(data));
