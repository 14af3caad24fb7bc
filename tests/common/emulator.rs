//! AWS IoT Core's device-facing services for the end-to-end tests:
//! `tests/emulator/aws_iot.py` (Device Shadow, Jobs, fleet provisioning),
//! an MQTT 5 client of the test [`Broker`] with mutual TLS, run with the
//! paho venv ([`paho_python`]).
//!
//! - [`Emulator::start`] spawns it and returns once it printed `ready`
//!   (every subscription acknowledged by the broker); it is killed by PID
//!   on drop, and its event log printed if the test is panicking.
//! - The cloud side's part goes to it as JSON lines on its stdin:
//!   [`Emulator::create_job`], [`Emulator::cancel_job`],
//!   [`Emulator::cloud_update`] (the console's shadow update). Each returns
//!   once the emulator logged that the command took effect, its MQTT
//!   messages (notify-next, delta, ...) already handed to its client.
//! - What it saw and did is one compact JSON object a line in its events
//!   file ([`Emulator::events`], [`Emulator::wait_event`]): `request` and
//!   `response` (`topic`, `payload` as text), `shadow_updated`,
//!   `shadow_deleted`, `job_status` (`thingName`, `jobId`, `status`,
//!   `statusDetails`, `versionNumber`), `certificate_signed`
//!   (`certificateId`, `certificatePem`), `provisioned` (`thingName`,
//!   `certificateId`, `parameters`), `control`, `disconnected` and
//!   `resubscribed` (back after a broker restart). Keys come in a fixed order
//!   and without spaces (`"status":"SUCCEEDED"`), so tests can match
//!   substrings.
//!
//! It signs CSRs with the test CA ([`Pki::ca_key`]) by running `openssl`,
//! so a provisioned certificate connects to the test broker.

use super::*;

/// How RegisterThing behaves: the template's name, the parameter that names
/// the thing and the prefix put before it, the parameters it requires and
/// the `deviceConfiguration` it answers with.
#[derive(Clone, Debug)]
pub struct EmulatorOptions {
    pub template: String,
    pub thing_name_param: String,
    pub thing_prefix: String,
    /// Empty: only `thing_name_param`.
    pub required_params: Vec<String>,
    /// A JSON object.
    pub device_configuration: String,
    pub client_id: String,
}

impl Default for EmulatorOptions {
    fn default() -> Self {
        EmulatorOptions {
            template: "iotbox-fleet".to_owned(),
            thing_name_param: "SerialNumber".to_owned(),
            thing_prefix: String::new(),
            required_params: Vec::new(),
            device_configuration: "{}".to_owned(),
            client_id: "aws-iot-emulator".to_owned(),
        }
    }
}

/// The running emulator; see the module documentation.
pub struct Emulator {
    proc: Mutex<Proc>,
    events: PathBuf,
    next_id: AtomicUsize,
    pub options: EmulatorOptions,
}

/// `s` as a JSON string literal, quotes included.
pub fn json_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The string value of the first `"key":"..."` in the compact JSON `text`,
/// unescaped (enough for the emulator's lines and AWS's responses; not a
/// JSON parser).
pub fn json_string_field(text: &str, key: &str) -> Option<String> {
    let needle = format!("{}:\"", json_str(key));
    let start = text.find(&needle)? + needle.len();
    let mut out = String::new();
    let mut chars = text[start..].chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => return Some(out),
            '\\' => match chars.next()? {
                'n' => out.push('\n'),
                'r' => out.push('\r'),
                't' => out.push('\t'),
                'u' => {
                    let hex: String = chars.by_ref().take(4).collect();
                    out.push(char::from_u32(u32::from_str_radix(&hex, 16).ok()?)?);
                }
                other => out.push(other),
            },
            c => out.push(c),
        }
    }
    None
}

impl Emulator {
    /// Start the emulator against `broker` with the default options and
    /// the provisioning template `template`.
    pub fn start(env: &Env, broker: &Broker, template: &str) -> Emulator {
        let options = EmulatorOptions {
            template: template.to_owned(),
            ..EmulatorOptions::default()
        };
        Emulator::start_with(env, broker, options)
    }

    /// Start it with `options`; waits for `ready` (panics at the deadline
    /// with its output).
    pub fn start_with(env: &Env, broker: &Broker, options: EmulatorOptions) -> Emulator {
        let openssl = need_tool("openssl", "OPENSSL", "apt-get install openssl");
        let python = paho_python();
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/emulator/aws_iot.py");
        let dir = env.path("emulator");
        fs::create_dir_all(&dir).expect("mkdir emulator");
        let events = dir.join("events.jsonl");
        let pki = env.pki();
        let mut cmd = Command::new(python);
        cmd.arg(&script)
            .args(["--host", "127.0.0.1", "--port", &broker.port.to_string()])
            .arg("--cafile")
            .arg(&pki.ca)
            .arg("--cert")
            .arg(&pki.client_cert)
            .arg("--key")
            .arg(&pki.client_key)
            .args(["--client-id", &options.client_id])
            .arg("--events")
            .arg(&events)
            .arg("--ca-cert")
            .arg(&pki.ca)
            .arg("--ca-key")
            .arg(&pki.ca_key)
            .arg("--openssl")
            .arg(&openssl)
            .arg("--work-dir")
            .arg(&dir)
            .args(["--template", &options.template])
            .args(["--thing-name-param", &options.thing_name_param])
            .args(["--thing-prefix", &options.thing_prefix])
            .args(["--device-configuration", &options.device_configuration])
            .env("PYTHONUNBUFFERED", "1");
        for p in &options.required_params {
            cmd.args(["--required-param", p]);
        }
        let mut proc = Proc::spawn_with_stdin("aws-iot-emulator", cmd);
        proc.wait_for_line("ready", deadline());
        Emulator {
            proc: Mutex::new(proc),
            events,
            next_id: AtomicUsize::new(1),
            options,
        }
    }

    /// The events file (JSON lines).
    pub fn events_path(&self) -> &Path {
        &self.events
    }

    /// Every complete event line so far.
    pub fn events(&self) -> Vec<String> {
        let text = fs::read_to_string(&self.events).unwrap_or_default();
        let complete = text.rfind('\n').map_or("", |i| &text[..=i]);
        complete.lines().map(str::to_owned).collect()
    }

    /// How many event lines there are now: a mark for
    /// [`Emulator::wait_event_since`].
    pub fn mark(&self) -> usize {
        self.events().len()
    }

    /// The first event line satisfying `pred`, waiting for it until
    /// `deadline`; panics then with the whole event log and the
    /// emulator's output, describing the wait with `what`.
    pub fn wait_event(&self, what: &str, pred: impl Fn(&str) -> bool, deadline: Instant) -> String {
        self.wait_event_since(0, what, pred, deadline)
    }

    /// [`Emulator::wait_event`] among the lines after the first `mark`.
    pub fn wait_event_since(
        &self,
        mark: usize,
        what: &str,
        pred: impl Fn(&str) -> bool,
        deadline: Instant,
    ) -> String {
        loop {
            if let Some(line) = self.events().into_iter().skip(mark).find(|l| pred(l)) {
                return line;
            }
            let exited = self.proc.lock().unwrap().has_exited();
            if exited || Instant::now() >= deadline {
                let why = if exited { "it exited" } else { "the deadline" };
                self.fail(&format!("no event {what} before {why}"));
            }
            // The file has no event to wait on: poll it.
            thread::sleep(POLL);
        }
    }

    /// Wait for a `job_status` event of `thing`'s `job_id` with `status`.
    pub fn wait_job_status(&self, thing: &str, job_id: &str, status: &str) -> String {
        let parts = [
            "\"event\":\"job_status\"".to_owned(),
            format!("\"thingName\":{},", json_str(thing)),
            format!("\"jobId\":{},", json_str(job_id)),
            format!("\"status\":{},", json_str(status)),
        ];
        self.wait_event(
            &format!("job_status {thing}/{job_id} {status}"),
            |l| parts.iter().all(|p| l.contains(p.as_str())),
            deadline(),
        )
    }

    /// Wait for a request received on `topic`; returns the event line.
    pub fn wait_request(&self, topic: &str) -> String {
        let needle = format!("\"topic\":{},", json_str(topic));
        self.wait_event(
            &format!("request on {topic}"),
            |l| l.starts_with("{\"event\":\"request\"") && l.contains(&needle),
            deadline(),
        )
    }

    /// Send one control command (a JSON object without its `id`, which is
    /// added) and wait until the emulator says it took effect.
    fn command(&self, fields: &str) {
        let id = self.next_id.fetch_add(1, Ordering::SeqCst);
        let line = format!("{{\"id\":{id},{fields}}}\n");
        self.proc.lock().unwrap().write_stdin(line.as_bytes());
        let needle = format!("\"id\":{id},");
        let done = self.wait_event(
            &format!("control {id} acknowledged"),
            |l| l.starts_with("{\"event\":\"control\"") && l.contains(&needle),
            deadline(),
        );
        if !done.contains("\"ok\":true") {
            self.fail(&format!("control command {line:?} failed: {done}"));
        }
    }

    /// CreateJob for one thing: a QUEUED execution of `job_id` with the
    /// job document `document_json` (a JSON object). notify-next goes out
    /// if it became the thing's next pending execution.
    pub fn create_job(&self, thing: &str, job_id: &str, document_json: &str) {
        self.command(&format!(
            "\"op\":\"create_job\",\"thingName\":{},\"jobId\":{},\"document\":{document_json}",
            json_str(thing),
            json_str(job_id)
        ));
    }

    /// CancelJobExecution from the cloud: the execution becomes CANCELED.
    pub fn cancel_job(&self, thing: &str, job_id: &str) {
        self.command(&format!(
            "\"op\":\"cancel_job\",\"thingName\":{},\"jobId\":{}",
            json_str(thing),
            json_str(job_id)
        ));
    }

    /// Update `thing`'s shadow (classic, or named `name`) as the console
    /// or another cloud application does: `document` is a request state
    /// document (`{"state":{"desired":{...}}}`). The device sees
    /// `update/delta` (if desired now differs from reported) and
    /// `update/documents`, not `update/accepted`.
    pub fn cloud_update(&self, thing: &str, name: Option<&str>, document: &str) {
        let name = name.map_or_else(|| "null".to_owned(), json_str);
        self.command(&format!(
            "\"op\":\"cloud_update\",\"thingName\":{},\"shadowName\":{name},\"document\":{document}",
            json_str(thing)
        ));
    }

    /// The event log, numbered, and the emulator's output: for failures.
    pub fn report(&self) -> String {
        let log = fs::read_to_string(&self.events).unwrap_or_default();
        format!(
            "--- emulator events ({}) ---\n{}{}",
            self.events.display(),
            numbered(&log),
            self.proc.lock().map(|p| p.report()).unwrap_or_default()
        )
    }

    /// Panic with `msg` and [`Emulator::report`].
    pub fn fail(&self, msg: &str) -> ! {
        panic!("[aws-iot-emulator] {msg}\n{}", self.report());
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        if thread::panicking() {
            let log = fs::read_to_string(&self.events).unwrap_or_default();
            eprintln!("--- emulator events ---\n{}", numbered(&log));
        }
        // The Proc's own drop kills the child by its PID.
    }
}
