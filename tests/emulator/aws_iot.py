#!/usr/bin/env python3
"""AWS IoT Core's three device-facing MQTT services, emulated for the tests.

An ordinary MQTT 5 client of the test broker (mutual TLS) that answers, as
AWS IoT Core does, on the reserved topics of

- the Device Shadow service, classic and named shadows
  ($aws/things/T/shadow/... and $aws/things/T/shadow/name/N/...);
- the Jobs device API ($aws/things/T/jobs/...);
- fleet provisioning, JSON flavour ($aws/certificates/create-from-csr/json
  and $aws/provisioning-templates/TEMPLATE/provision/json).

Topics, field names and error shapes follow AWS's documentation of these
contracts ("Device Shadow MQTT topics", "Device Shadow service documents",
"Device Shadow error messages", "Jobs device MQTT API", the iot-jobs-data
API reference, "Device provisioning MQTT API"). State lives in memory.

What only the cloud side does (create or cancel a job, update a shadow as
the console does) comes as control commands: one JSON object per line on
stdin, or one per message on the topic `emulator/control`:

    {"op": "create_job", "id": 1, "thingName": "T", "jobId": "J", "document": {...}}
    {"op": "cancel_job", "id": 2, "thingName": "T", "jobId": "J"}
    {"op": "cloud_update", "id": 3, "thingName": "T", "shadowName": null,
     "document": {"state": {"desired": {...}}}}

Every observable event is one compact JSON line appended (and flushed) to
--events: requests and responses with topic and payload, shadow changes,
job execution status changes, certificates signed, things provisioned, and
`{"event": "control", "id": N, "ok": true|false, ...}` once a command took
effect (its messages already handed to the MQTT client); besides,
`ready`, `disconnected` and `resubscribed` (after a reconnection),
`csr_refused` (openssl's complaint) and `internal_error`. `ready` is also
printed on stdout once every subscription is acknowledged.

Certificates are signed by the `openssl` command with --ca-cert and
--ca-key, so a provisioned certificate connects to the test broker.
"""

import argparse
import hashlib
import json
import os
import re
import secrets
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import unicodedata

import paho.mqtt.client as mqtt
from paho.mqtt.subscribeoptions import SubscribeOptions

CONTROL_TOPIC = "emulator/control"

# The requests answered. The emulator subscribes with no-local, so it never
# sees (and never answers) its own responses.
REQUEST_FILTERS = [
    "$aws/things/+/shadow/get",
    "$aws/things/+/shadow/update",
    "$aws/things/+/shadow/delete",
    "$aws/things/+/shadow/name/+/get",
    "$aws/things/+/shadow/name/+/update",
    "$aws/things/+/shadow/name/+/delete",
    "$aws/things/+/jobs/get",
    "$aws/things/+/jobs/start-next",
    "$aws/things/+/jobs/+/get",
    "$aws/things/+/jobs/+/update",
    "$aws/certificates/create-from-csr/json",
    "$aws/provisioning-templates/+/provision/json",
    CONTROL_TOPIC,
]

# Jobs: statusDetails keys and values (API reference, JobExecutionState).
STATUS_DETAILS_KEY = re.compile(r"^[a-zA-Z0-9:_-]{1,128}$")
STATUS_DETAILS_VALUE_MAX = 1024
TERMINAL = {"SUCCEEDED", "FAILED", "REJECTED", "TIMED_OUT", "REMOVED", "CANCELED"}
# What a device may set with UpdateJobExecution.
DEVICE_STATUSES = {"IN_PROGRESS", "SUCCEEDED", "FAILED", "REJECTED"}

CLIENT_TOKEN_MAX = 64  # bytes: "Invalid clientToken" beyond


def now():
    """Seconds since the epoch: the unit of every AWS timestamp here."""
    return int(time.time())


def compact(obj):
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


class Events:
    """The events file: one JSON object per line, flushed at once."""

    def __init__(self, path):
        self.lock = threading.Lock()
        self.file = open(path, "a", encoding="utf-8")

    def log(self, event, **fields):
        line = {"event": event, "time": round(time.time(), 3)}
        line.update(fields)
        with self.lock:
            self.file.write(compact(line) + "\n")
            self.file.flush()


class Rejected(Exception):
    """A request answered on its .../rejected topic with `body`."""

    def __init__(self, body):
        super().__init__(body)
        self.body = body


def parse_request(payload, empty_ok):
    """The request's JSON object ({} for an empty payload if `empty_ok`),
    or None if it is not a JSON object."""
    if not payload.strip() and empty_ok:
        return {}
    try:
        doc = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


# ---------------------------------------------------------------------------
# Device Shadow


def merge(target, update):
    """Apply an update section to `target` in place: objects merge key by
    key, null deletes, anything else (arrays included) replaces."""
    for key, value in update.items():
        if value is None:
            target.pop(key, None)
        elif isinstance(value, dict) and isinstance(target.get(key), dict):
            merge(target[key], value)
        elif isinstance(value, dict):
            target[key] = {}
            merge(target[key], value)
        else:
            target[key] = value


def prune(section):
    """Remove objects left empty by deletions."""
    for key in list(section):
        if isinstance(section[key], dict):
            prune(section[key])
            if not section[key]:
                del section[key]


def stamp(update, ts):
    """Metadata for an update section: a timestamp for each leaf (an array
    is one leaf), the structure of the update kept."""
    return {
        k: stamp(v, ts) if isinstance(v, dict) else {"timestamp": ts}
        for k, v in update.items()
    }


def delta_of(desired, reported):
    """The desired attributes that differ from the reported ones, nested
    objects compared attribute by attribute."""
    out = {}
    for key, want in desired.items():
        have = reported.get(key) if isinstance(reported, dict) else None
        if isinstance(want, dict) and isinstance(have, dict):
            sub = delta_of(want, have)
            if sub:
                out[key] = sub
        elif want != have:
            out[key] = want
    return out


def metadata_for(tree, metadata):
    """The metadata entries of the attributes in `tree` (the state, or a
    delta): a timestamp for each leaf, nested objects followed."""
    out = {}
    for key, value in tree.items():
        meta = metadata.get(key) if isinstance(metadata, dict) else None
        meta = meta if isinstance(meta, dict) else {}
        if isinstance(value, dict):
            out[key] = metadata_for(value, meta)
        elif isinstance(meta.get("timestamp"), int):
            out[key] = {"timestamp": meta["timestamp"]}
        else:
            out[key] = meta
    return out


class Shadow:
    def __init__(self):
        self.exists = False
        self.version = 0  # kept across a delete, as AWS keeps it
        self.state = {}
        self.metadata = {}

    def clear(self):
        self.exists = False
        self.state = {}
        self.metadata = {}

    def snapshot(self):
        return {
            "state": json.loads(json.dumps(self.state)),
            "metadata": json.loads(json.dumps(self.metadata)),
            "version": self.version,
        }


def validate_update(doc):
    """Raise Rejected (400) for what AWS refuses in a request state
    document; returns the state section (None: clear the shadow)."""
    if "state" not in doc:
        raise Rejected((400, "Missing required node: state"))
    state = doc["state"]
    if state is None:
        return None
    if not isinstance(state, dict):
        raise Rejected((400, "State node must be an object"))
    for key, value in state.items():
        if key not in ("desired", "reported"):
            raise Rejected((400, "State contains an invalid node"))
        if value is not None and not isinstance(value, dict):
            raise Rejected((400, f"{key.capitalize()} node must be an object"))
    if "version" in doc and (
        not isinstance(doc["version"], int) or isinstance(doc["version"], bool)
    ):
        raise Rejected((400, "Invalid version"))
    return state


# ---------------------------------------------------------------------------
# The emulator


class Emulator:
    def __init__(self, args):
        self.args = args
        self.events = Events(args.events)
        self.lock = threading.RLock()
        self.shadows = {}  # (thing, shadow name or None) -> Shadow
        self.jobs = {}  # thing -> [execution dict], in creation order
        self.execution_numbers = 0
        self.tokens = {}  # certificateOwnershipToken -> certificateId
        self.used_tokens = set()
        self.serial = secrets.randbits(62)
        self.work = args.work_dir or tempfile.mkdtemp(prefix="aws-iot-emulator-")
        os.makedirs(self.work, exist_ok=True)
        self.ready = threading.Event()
        self.announced = False
        self.pending_subscribe = None

        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=args.client_id,
            protocol=mqtt.MQTTv5,
        )
        self.client.tls_set(
            ca_certs=args.cafile, certfile=args.cert, keyfile=args.key
        )
        # Back soon after a broker restart; every connection subscribes anew.
        self.client.reconnect_delay_set(min_delay=1, max_delay=2)
        self.client.on_connect = self.on_connect
        self.client.on_subscribe = self.on_subscribe
        self.client.on_message = self.on_message
        self.client.on_disconnect = self.on_disconnect

    # -- MQTT plumbing ------------------------------------------------------

    def on_connect(self, client, userdata, flags, reason_code, properties):
        if reason_code.is_failure:
            print(f"connect refused: {reason_code}", file=sys.stderr, flush=True)
            return
        opts = SubscribeOptions(qos=1, noLocal=True)
        result, mid = client.subscribe([(f, opts) for f in REQUEST_FILTERS])
        self.pending_subscribe = mid

    def on_subscribe(self, client, userdata, mid, reason_codes, properties):
        if mid != self.pending_subscribe:
            return
        bad = [str(rc) for rc in reason_codes if rc.is_failure]
        if bad:
            print(f"subscriptions refused: {bad}", file=sys.stderr, flush=True)
            os._exit(1)
        if self.announced:
            self.events.log("resubscribed")
            return
        self.announced = True
        self.events.log("ready", filters=REQUEST_FILTERS)
        print("ready", flush=True)

    def on_disconnect(self, client, userdata, flags, reason_code, properties):
        self.events.log("disconnected", reason=str(reason_code))

    def publish(self, topic, body):
        payload = compact(body)
        self.events.log("response", topic=topic, payload=payload)
        self.client.publish(topic, payload.encode("utf-8"), qos=1)

    def on_message(self, client, userdata, msg):
        topic = msg.topic
        text = msg.payload.decode("utf-8", errors="replace")
        self.events.log("request", topic=topic, payload=text)
        try:
            with self.lock:
                if topic == CONTROL_TOPIC:
                    self.control(text)
                elif "/shadow/" in topic:
                    self.shadow_request(topic, msg.payload)
                elif "/jobs/" in topic:
                    self.jobs_request(topic, msg.payload)
                elif topic.startswith("$aws/certificates/"):
                    self.create_from_csr(topic, msg.payload)
                elif topic.startswith("$aws/provisioning-templates/"):
                    self.register_thing(topic, msg.payload)
        except Exception as e:  # keep serving; the test sees the event
            self.events.log("internal_error", topic=topic, error=repr(e))
            print(f"internal error on {topic}: {e!r}", file=sys.stderr, flush=True)

    # -- Device Shadow ------------------------------------------------------

    def shadow_request(self, topic, payload):
        parts = topic.split("/")
        thing = parts[2]
        if parts[4] == "name":
            name, op = parts[5], parts[6]
            prefix = "/".join(parts[:6])
        else:
            name, op = None, parts[4]
            prefix = "/".join(parts[:4])
        shadow = self.shadows.setdefault((thing, name), Shadow())
        doc = parse_request(payload, empty_ok=op in ("get", "delete"))
        token = doc.get("clientToken") if doc else None
        try:
            if doc is None:
                raise Rejected((400, "Invalid JSON"))
            if "clientToken" in doc and (
                not isinstance(token, str)
                or len(token.encode("utf-8")) > CLIENT_TOKEN_MAX
            ):
                token = None
                raise Rejected((400, "Invalid clientToken"))
            if op == "get":
                self.shadow_get(prefix, thing, name, shadow, token)
            elif op == "delete":
                self.shadow_delete(prefix, thing, name, shadow, token)
            else:
                self.shadow_update(prefix, thing, name, shadow, doc, token, "device")
        except Rejected as r:
            code, message = r.body
            body = {"code": code, "message": message, "timestamp": now()}
            if token is not None:
                body["clientToken"] = token
            self.publish(f"{prefix}/{op}/rejected", body)

    @staticmethod
    def not_found(thing, name):
        # The name AWS quotes: the thing's for a classic shadow.
        return Rejected((404, f"No shadow exists with name: '{name or thing}'"))

    def shadow_get(self, prefix, thing, name, shadow, token):
        if not shadow.exists:
            raise self.not_found(thing, name)
        state = json.loads(json.dumps(shadow.state))
        delta = delta_of(state.get("desired", {}), state.get("reported", {}))
        if delta:
            state["delta"] = delta
        body = {
            "state": state,
            "metadata": shadow.metadata,
            "version": shadow.version,
            "timestamp": now(),
        }
        if token is not None:
            body["clientToken"] = token
        self.publish(f"{prefix}/get/accepted", body)

    def shadow_delete(self, prefix, thing, name, shadow, token):
        if not shadow.exists:
            raise self.not_found(thing, name)
        shadow.clear()
        body = {"version": shadow.version, "timestamp": now()}
        if token is not None:
            body["clientToken"] = token
        self.events.log(
            "shadow_deleted", thingName=thing, shadowName=name, version=shadow.version
        )
        self.publish(f"{prefix}/delete/accepted", body)

    def shadow_update(self, prefix, thing, name, shadow, doc, token, source):
        state = validate_update(doc)
        if "version" in doc and doc["version"] != shadow.version:
            raise Rejected((409, "Version conflict"))
        ts = now()
        previous = shadow.snapshot()
        if state is None:
            shadow.state, shadow.metadata = {}, {}
            state = {}
        for section in ("desired", "reported"):
            if section not in state:
                continue
            if state[section] is None:
                shadow.state.pop(section, None)
                shadow.metadata.pop(section, None)
                continue
            merge(shadow.state.setdefault(section, {}), state[section])
            merge(shadow.metadata.setdefault(section, {}), stamp(state[section], ts))
            prune(shadow.state[section])
            if not shadow.state[section]:
                del shadow.state[section]
                shadow.metadata.pop(section, None)
            else:
                # Metadata only of what is still there.
                shadow.metadata[section] = metadata_for(
                    shadow.state[section], shadow.metadata[section]
                )
        shadow.exists = True
        shadow.version += 1
        self.events.log(
            "shadow_updated",
            thingName=thing,
            shadowName=name,
            source=source,
            version=shadow.version,
            state=shadow.state,
        )
        with_token = {} if token is None else {"clientToken": token}
        if source == "device":
            # The console's update is answered by its HTTP response instead.
            accepted = {
                "state": state,
                "metadata": {
                    k: stamp(v, ts) for k, v in state.items() if isinstance(v, dict)
                },
                "version": shadow.version,
                "timestamp": ts,
            }
            self.publish(f"{prefix}/update/accepted", {**accepted, **with_token})
        # /update/delta: when the update set desired state that the
        # reported state does not match; all the differing attributes.
        if isinstance(state.get("desired"), dict):
            delta = delta_of(
                shadow.state.get("desired", {}), shadow.state.get("reported", {})
            )
            if delta:
                body = {
                    "version": shadow.version,
                    "timestamp": ts,
                    "state": delta,
                    "metadata": metadata_for(
                        delta, shadow.metadata.get("desired", {})
                    ),
                }
                self.publish(f"{prefix}/update/delta", {**body, **with_token})
        documents = {
            "previous": previous,
            "current": shadow.snapshot(),
            "timestamp": ts,
        }
        self.publish(f"{prefix}/update/documents", {**documents, **with_token})

    # -- Jobs ---------------------------------------------------------------

    def pending(self, thing):
        executions = self.jobs.get(thing, [])
        return [e for e in executions if e["status"] in ("IN_PROGRESS", "QUEUED")]

    def next_pending(self, thing):
        """DescribeJobExecution's $next: the oldest IN_PROGRESS execution,
        else the oldest QUEUED one."""
        pending = self.pending(thing)
        for status in ("IN_PROGRESS", "QUEUED"):
            for e in pending:
                if e["status"] == status:
                    return e
        return None

    @staticmethod
    def execution(e, include_document=True):
        out = {
            "jobId": e["jobId"],
            "thingName": e["thingName"],
            "status": e["status"],
            "queuedAt": e["queuedAt"],
            "lastUpdatedAt": e["lastUpdatedAt"],
            "versionNumber": e["versionNumber"],
            "executionNumber": e["executionNumber"],
        }
        if "startedAt" in e:
            out["startedAt"] = e["startedAt"]
        if e.get("statusDetails"):
            out["statusDetails"] = e["statusDetails"]
        if include_document:
            out["jobDocument"] = e["document"]
        return out

    @staticmethod
    def summary(e):
        out = {
            "jobId": e["jobId"],
            "queuedAt": e["queuedAt"],
            "lastUpdatedAt": e["lastUpdatedAt"],
            "versionNumber": e["versionNumber"],
            "executionNumber": e["executionNumber"],
        }
        if "startedAt" in e:
            out["startedAt"] = e["startedAt"]
        return out

    @staticmethod
    def execution_state(e):
        out = {"status": e["status"], "versionNumber": e["versionNumber"]}
        if e.get("statusDetails"):
            out["statusDetails"] = e["statusDetails"]
        return out

    def log_status(self, e):
        self.events.log(
            "job_status",
            thingName=e["thingName"],
            jobId=e["jobId"],
            status=e["status"],
            statusDetails=e.get("statusDetails", {}),
            versionNumber=e["versionNumber"],
        )

    def announce(self, thing, before_next, before_pending):
        """notify-next when the next pending execution changed; notify when
        an execution joined or left the pending list."""
        ts = now()
        after = self.next_pending(thing)
        if (before_next and before_next["jobId"]) != (after and after["jobId"]):
            body = {"timestamp": ts}
            if after:
                body["execution"] = self.execution(after)
            self.publish(f"$aws/things/{thing}/jobs/notify-next", body)
        pending = [e["jobId"] for e in self.pending(thing)]
        if pending != before_pending:
            jobs = {}
            for e in self.pending(thing):
                jobs.setdefault(e["status"], []).append(self.summary(e))
            self.publish(
                f"$aws/things/{thing}/jobs/notify", {"timestamp": ts, "jobs": jobs}
            )

    def snapshot_pending(self, thing):
        return self.next_pending(thing), [e["jobId"] for e in self.pending(thing)]

    def create_job(self, thing, job_id, document):
        if not isinstance(document, dict):
            raise ValueError("document must be a JSON object")
        if any(e["jobId"] == job_id for e in self.jobs.get(thing, [])):
            raise ValueError(f"job {job_id} exists for {thing}")
        before = self.snapshot_pending(thing)
        self.execution_numbers += 1
        ts = now()
        e = {
            "jobId": job_id,
            "thingName": thing,
            "document": document,
            "status": "QUEUED",
            "queuedAt": ts,
            "lastUpdatedAt": ts,
            "versionNumber": 1,
            "executionNumber": self.execution_numbers,
        }
        self.jobs.setdefault(thing, []).append(e)
        self.log_status(e)
        self.announce(thing, *before)

    def cancel_job(self, thing, job_id):
        e = self.find(thing, job_id)
        if e is None:
            raise ValueError(f"no job {job_id} for {thing}")
        before = self.snapshot_pending(thing)
        e["status"] = "CANCELED"
        e["lastUpdatedAt"] = now()
        e["versionNumber"] += 1
        self.log_status(e)
        self.announce(thing, *before)

    def find(self, thing, job_id):
        for e in self.jobs.get(thing, []):
            if e["jobId"] == job_id:
                return e
        return None

    @staticmethod
    def check_status_details(details):
        """JobExecutionState.statusDetails: a map of string to string; keys
        1 to 128 of [a-zA-Z0-9:_-], values 1 to 1024 characters of
        [^\\p{C}] (no control, format, private-use or unassigned ones)."""
        if not isinstance(details, dict):
            raise Rejected(("InvalidRequest", "statusDetails must be an object"))
        for key, value in details.items():
            if not STATUS_DETAILS_KEY.match(key):
                raise Rejected(
                    ("InvalidRequest", f"statusDetails key {key!r} is invalid")
                )
            if not isinstance(value, str):
                raise Rejected(
                    ("InvalidRequest", f"statusDetails value of {key!r} must be a string")
                )
            if not 1 <= len(value) <= STATUS_DETAILS_VALUE_MAX:
                raise Rejected(
                    (
                        "InvalidRequest",
                        f"statusDetails value of {key!r} must be 1 to "
                        f"{STATUS_DETAILS_VALUE_MAX} characters",
                    )
                )
            if any(unicodedata.category(c).startswith("C") for c in value):
                raise Rejected(
                    (
                        "InvalidRequest",
                        f"statusDetails value of {key!r} contains a control character",
                    )
                )

    def jobs_request(self, topic, payload):
        parts = topic.split("/")
        thing = parts[2]
        prefix = "/".join(parts[:4])
        if len(parts) == 5:
            op, job_id, reply = parts[4], None, topic
        else:
            op, job_id, reply = parts[5], parts[4], topic
        doc = parse_request(payload, empty_ok=True)
        token = doc.get("clientToken") if doc else None
        try:
            if doc is None:
                raise Rejected(("InvalidJson", "Invalid JSON"))
            if op == "get" and job_id is None:
                self.get_pending(prefix, thing, token)
            elif op == "start-next":
                self.start_next(prefix, thing, doc, token)
            elif op == "get":
                self.describe(reply, thing, job_id, doc, token)
            else:
                self.update_execution(reply, thing, job_id, doc, token)
        except Rejected as r:
            body = {"code": r.body[0], "message": r.body[1], "timestamp": now()}
            if len(r.body) > 2:
                body["executionState"] = r.body[2]
            if isinstance(token, str):
                body["clientToken"] = token
            self.publish(f"{reply}/rejected", body)

    def reply(self, topic, body, token):
        body["timestamp"] = now()
        if isinstance(token, str):
            body["clientToken"] = token
        self.publish(topic, body)

    def get_pending(self, prefix, thing, token):
        pending = self.pending(thing)
        body = {
            "inProgressJobs": [
                self.summary(e) for e in pending if e["status"] == "IN_PROGRESS"
            ],
            "queuedJobs": [self.summary(e) for e in pending if e["status"] == "QUEUED"],
        }
        self.reply(f"{prefix}/get/accepted", body, token)

    def start_next(self, prefix, thing, doc, token):
        if "statusDetails" in doc:
            self.check_status_details(doc["statusDetails"])
        before = self.snapshot_pending(thing)
        e = self.next_pending(thing)
        body = {}
        if e is not None:
            if e["status"] == "QUEUED":
                ts = now()
                e["status"] = "IN_PROGRESS"
                e["startedAt"] = ts
                e["lastUpdatedAt"] = ts
                e["versionNumber"] += 1
                if "statusDetails" in doc:
                    e["statusDetails"] = doc["statusDetails"]
                self.log_status(e)
            body["execution"] = self.execution(e)
        self.reply(f"{prefix}/start-next/accepted", body, token)
        if e is not None:
            self.announce(thing, *before)

    def lookup(self, thing, job_id, doc):
        e = self.next_pending(thing) if job_id == "$next" else self.find(thing, job_id)
        number = doc.get("executionNumber")
        if e is None or (number is not None and number != e["executionNumber"]):
            raise Rejected(
                (
                    "ResourceNotFound",
                    f"Job Execution for job {job_id} on thing {thing} not found",
                )
            )
        return e

    def describe(self, reply, thing, job_id, doc, token):
        e = self.lookup(thing, job_id, doc)
        include = doc.get("includeJobDocument", True) is not False
        self.reply(
            f"{reply}/accepted", {"execution": self.execution(e, include)}, token
        )

    def update_execution(self, reply, thing, job_id, doc, token):
        e = self.lookup(thing, job_id, doc)
        status = doc.get("status")
        if not isinstance(status, str):
            raise Rejected(("InvalidRequest", "status is required"))
        if "statusDetails" in doc:
            self.check_status_details(doc["statusDetails"])
        expected = doc.get("expectedVersion")
        if expected is not None:
            try:
                expected = int(expected)
            except (TypeError, ValueError):
                raise Rejected(("InvalidRequest", "expectedVersion must be a number"))
            if expected != e["versionNumber"]:
                raise Rejected(
                    (
                        "VersionMismatch",
                        "expectedVersion does not match the job execution's version",
                        self.execution_state(e),
                    )
                )
        if e["status"] in TERMINAL or status == "QUEUED":
            raise Rejected(
                (
                    "InvalidStateTransition",
                    f"Cannot update job execution {job_id} from status "
                    f"{e['status']} to {status}",
                    self.execution_state(e),
                )
            )
        if status not in DEVICE_STATUSES:
            raise Rejected(("InvalidRequest", f"Invalid status {status}"))
        before = self.snapshot_pending(thing)
        ts = now()
        if status == "IN_PROGRESS" and "startedAt" not in e:
            e["startedAt"] = ts
        e["status"] = status
        e["lastUpdatedAt"] = ts
        e["versionNumber"] += 1
        if "statusDetails" in doc:
            e["statusDetails"] = doc["statusDetails"]
        self.log_status(e)
        body = {}
        if doc.get("includeJobExecutionState") is True:
            body["executionState"] = self.execution_state(e)
        if doc.get("includeJobDocument") is True:
            body["jobDocument"] = e["document"]
        self.reply(f"{reply}/accepted", body, token)
        self.announce(thing, *before)

    # -- Fleet provisioning -------------------------------------------------

    def openssl(self, *args):
        return subprocess.run(
            [self.args.openssl, *args], capture_output=True, text=True, check=False
        )

    def create_from_csr(self, topic, payload):
        doc = parse_request(payload, empty_ok=False)
        csr = doc.get("certificateSigningRequest") if doc else None
        if not isinstance(csr, str) or not csr.strip():
            self.publish(
                f"{topic}/rejected",
                {
                    "statusCode": 400,
                    "errorCode": "InvalidPayload",
                    "errorMessage": "certificateSigningRequest is required",
                },
            )
            return
        self.serial += 1
        base = os.path.join(self.work, f"csr-{self.serial}")
        with open(base + ".csr", "w", encoding="utf-8") as f:
            f.write(csr)
        with open(base + ".ext", "w", encoding="utf-8") as f:
            f.write(
                "[device]\n"
                "basicConstraints = critical, CA:FALSE\n"
                "keyUsage = critical, digitalSignature\n"
                "extendedKeyUsage = clientAuth\n"
                "subjectKeyIdentifier = hash\n"
                "authorityKeyIdentifier = keyid\n"
            )
        check = self.openssl("req", "-in", base + ".csr", "-noout", "-verify")
        sign = check
        if check.returncode == 0:
            sign = self.openssl(
                *("x509", "-req", "-in", base + ".csr", "-sha256", "-days", "2"),
                *("-CA", self.args.ca_cert, "-CAkey", self.args.ca_key),
                *("-set_serial", str(self.serial), "-out", base + ".pem"),
                *("-extfile", base + ".ext", "-extensions", "device"),
            )
        if sign.returncode != 0:
            detail = sign.stderr.strip()
            self.events.log("csr_refused", error=detail)
            self.publish(
                f"{topic}/rejected",
                {
                    "statusCode": 400,
                    "errorCode": "InvalidPayload",
                    "errorMessage": "Invalid certificate signing request",
                },
            )
            return
        with open(base + ".pem", encoding="utf-8") as f:
            pem = f.read()
        cert_id = hashlib.sha256(ssl.PEM_cert_to_DER_cert(pem)).hexdigest()
        token = secrets.token_urlsafe(48)
        self.tokens[token] = cert_id
        self.events.log(
            "certificate_signed",
            certificateId=cert_id,
            serial=self.serial,
            certificatePem=pem,
        )
        self.publish(
            f"{topic}/accepted",
            {
                "certificateId": cert_id,
                "certificatePem": pem,
                "certificateOwnershipToken": token,
            },
        )

    def register_thing(self, topic, payload):
        template = topic.split("/")[2]

        def reject(status, code, message):
            self.publish(
                f"{topic}/rejected",
                {"statusCode": status, "errorCode": code, "errorMessage": message},
            )

        if template != self.args.template:
            return reject(404, "ResourceNotFound", f"Template {template} not found")
        doc = parse_request(payload, empty_ok=False)
        if doc is None:
            return reject(400, "InvalidPayload", "Invalid JSON")
        token = doc.get("certificateOwnershipToken")
        if not isinstance(token, str) or not token:
            return reject(
                400,
                "InvalidCertificateOwnershipToken",
                "Certificate ownership token cannot be empty.",
            )
        if token not in self.tokens or token in self.used_tokens:
            return reject(
                400,
                "InvalidCertificateOwnershipToken",
                "Certificate ownership token is invalid.",
            )
        parameters = doc.get("parameters", {})
        if not isinstance(parameters, dict) or not all(
            isinstance(v, str) for v in parameters.values()
        ):
            return reject(400, "InvalidParameters", "parameters must map strings to strings")
        for name in self.args.required_param or [self.args.thing_name_param]:
            if not parameters.get(name):
                return reject(400, "InvalidParameters", f"Missing required parameter: {name}")
        self.used_tokens.add(token)
        thing = self.args.thing_prefix + parameters[self.args.thing_name_param]
        config = json.loads(self.args.device_configuration)
        self.events.log(
            "provisioned",
            template=template,
            thingName=thing,
            certificateId=self.tokens[token],
            parameters=parameters,
        )
        self.publish(
            f"{topic}/accepted", {"deviceConfiguration": config, "thingName": thing}
        )

    # -- Control ------------------------------------------------------------

    def control(self, line):
        try:
            cmd = json.loads(line)
            if not isinstance(cmd, dict):
                raise ValueError("a command is a JSON object")
        except ValueError as e:
            self.events.log("control", ok=False, error=str(e), line=line)
            return
        ident, op = cmd.get("id"), cmd.get("op")
        try:
            with self.lock:
                if op == "create_job":
                    self.create_job(cmd["thingName"], cmd["jobId"], cmd["document"])
                elif op == "cancel_job":
                    self.cancel_job(cmd["thingName"], cmd["jobId"])
                elif op == "cloud_update":
                    thing, name = cmd["thingName"], cmd.get("shadowName")
                    prefix = f"$aws/things/{thing}/shadow" + (
                        f"/name/{name}" if name else ""
                    )
                    shadow = self.shadows.setdefault((thing, name), Shadow())
                    document = cmd["document"]
                    token = document.get("clientToken")
                    self.shadow_update(
                        prefix, thing, name, shadow, document, token, "cloud"
                    )
                else:
                    raise ValueError(f"unknown op {op!r}")
        except (KeyError, ValueError, AttributeError, Rejected) as e:
            self.events.log("control", id=ident, op=op, ok=False, error=repr(e))
            return
        self.events.log("control", id=ident, op=op, ok=True)

    def run(self):
        self.client.connect(self.args.host, self.args.port, clean_start=True)
        self.client.loop_start()
        for line in sys.stdin:
            if line.strip():
                self.control(line)
        # stdin closed: the test is done with us.
        self.client.disconnect()
        self.client.loop_stop()


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--cafile", required=True, help="CA that signed the broker")
    p.add_argument("--cert", required=True, help="this client's certificate")
    p.add_argument("--key", required=True, help="this client's key")
    p.add_argument("--client-id", default="aws-iot-emulator")
    p.add_argument("--events", required=True, help="file of JSON event lines")
    p.add_argument("--ca-cert", help="CA certificate that signs CSRs")
    p.add_argument("--ca-key", help="its private key")
    p.add_argument("--work-dir", help="where CSRs and certificates are written")
    p.add_argument("--openssl", default="openssl", help="the openssl command")
    p.add_argument("--template", default="iotbox-fleet", help="provisioning template")
    p.add_argument("--thing-name-param", default="SerialNumber")
    p.add_argument("--thing-prefix", default="")
    p.add_argument(
        "--required-param",
        action="append",
        help="a parameter RegisterThing requires (repeatable; default: the thing name one)",
    )
    p.add_argument(
        "--device-configuration",
        default="{}",
        help="RegisterThing's deviceConfiguration (JSON object)",
    )
    args = p.parse_args()
    args.ca_cert = args.ca_cert or args.cafile
    if not isinstance(json.loads(args.device_configuration), dict):
        p.error("--device-configuration must be a JSON object")
    Emulator(args).run()


if __name__ == "__main__":
    main()
