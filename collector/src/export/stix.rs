//! An incident as a STIX 2.1 bundle, for the sector's information-sharing body.
//!
//! What the bundle holds, in this order:
//! - `identity` of Mamori (`identity_class: system`), which defines the extension below;
//! - `identity` of the producer, the operating organisation that shares the incident;
//! - the `extension-definition` [`EXTENSION_DEFINITION_ID`] (a `property-extension`);
//! - the `incident`: `name` is the incident's title, our fields are in the extension;
//! - per alert: the `ipv4-addr`/`ipv6-addr` and `network-traffic` observables it names, an
//!   `observed-data` referencing them (the alert's own fields in the extension) and a
//!   `relationship` tying it to the incident;
//! - per ATT&CK for ICS technique its alerts show: an `attack-pattern` with MITRE's external
//!   reference (`source_name: mitre-ics-attack`, `external_id: T0855`, the technique's URL)
//!   and its tactic as kill-chain phase, `related-to` from the incident;
//! - per host an alert names as never seen during learning: an `indicator`
//!   (`[ipv4-addr:value = '…']`), `based-on` the observed data, related to the incident, and
//!   per such alert a `sighting` of it where the producer saw it.
//!
//! Identifiers are UUIDv5: observables as STIX specifies (the STIX namespace over their ID
//! contributing properties), everything else from [`MAMORI_NAMESPACE`] over the producer's
//! name, the site and the collector's incident or alert number. So the same incident exported
//! twice (at the same `now`) is byte-identical, and a newer export of it updates the same
//! objects. The validator's "SHOULD use UUIDv4" warnings on SDOs are the price of that.
//!
//! Versions: `created` is when the collector opened the incident or stored the alert,
//! `modified` is the export time for the objects whose content follows the incident's state
//! (counts, last times, status), so that two different contents never share an
//! `(id, modified)` pair. Objects of an exercise carry the label `exercise` and say so in
//! their description, so that a drill's "indicators" are never mistaken for real ones.
//!
//! # The extension's properties
//! On the `incident`: `incident_id` (integer, the collector's number), `site`, `status`
//! (`open`/`acknowledged`/`resolved`), `severity` (`info`…`critical`), `first_seen`,
//! `last_seen` (event time), `detected`, `acknowledged`, `resolved` (collector wall time),
//! `acknowledged_by`, `resolved_by`, `time_to_detect_ms`, `alert_count`, `detectors`,
//! `techniques` (ATT&CK for ICS ids), `asset` (the subject), `affected_assets` (objects: `asset`, `address_ref`, `in_inventory`,
//! `roles`, `units`, `vendor`, `product`, `revision`, `criticality`, `hostnames`,
//! `description`), `impacts` (`process_control`, `process_state`, `availability`,
//! `reconnaissance`, `unclassified`), `service_impact` (a sentence), `exercise` (boolean),
//! `timeline` (objects: `at`, `kind`, `actor`, `text`), `detections` (objects: `alert_id`,
//! `detector`, `kind`, `severity`, `summary`, `count`, `first_seen`, `last_seen`, `score`,
//! `techniques`, `evidence`, `observed_data_ref`). On `observed-data`: `alert_id`, `detector`, `kind`,
//! `severity`, `summary`, `score`, `asset`, `subject`, `evidence`. Absent values and empty
//! lists are left out, as STIX requires.

use std::collections::BTreeSet;
use std::net::IpAddr;

use mamori_models::detect::attack::{self, Technique};
use mamori_models::detect::{Alert, DetectorName};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use uuid::Uuid;

use super::{
    Impact, affected_assets, impacts, service_impact, stix_time, stix_time_ms, time_to_detect_ms,
};
use crate::incident::{IncidentDetail, IncidentStatus, StoredAlert};

/// `created` and `modified` of the attack patterns: the ATT&CK for ICS release our catalogue
/// follows (v16, 31 October 2024), so that their versions do not move with every export.
const ATTACK_CATALOGUE_UNIX_MS: u64 = 1_730_332_800_000;

/// Our namespace for the UUIDv5 of every object that is not an observable.
pub const MAMORI_NAMESPACE: Uuid = Uuid::from_u128(0xb4b72b21_502b_4b52_9b18_4fdc3b70dd4e);

/// The namespace STIX 2.1 fixes for observables' deterministic identifiers (§2.9).
pub const STIX_SCO_NAMESPACE: Uuid = Uuid::from_u128(0x00abedb4_aa42_557c_b79e_1c1b1b8ed0c1);

/// Mamori's identity (`identity_class: system`): UUIDv5 of `identity/mamori`.
pub const MAMORI_IDENTITY_ID: &str = "identity--ce582ec4-024f-54bc-a9cb-2ae6606452be";

/// The extension carrying Mamori's incident and alert fields: UUIDv5 of
/// `extension-definition/incident`. Fixed: consumers key their parsers on it.
pub const EXTENSION_DEFINITION_ID: &str =
    "extension-definition--f8367ff7-49a7-539b-9165-59a2433e78d0";

/// The extension's version; a change to its properties that breaks a consumer is a new
/// major version (and a new `modified` below).
pub const EXTENSION_VERSION: &str = "1.0.0";

/// Where the extension's properties are defined (this module's documentation).
pub const EXTENSION_SCHEMA_URL: &str =
    "https://example.invalid/mamori/blob/main/collector/src/export/stix.rs";

/// `created` and `modified` of the objects Mamori defines (its identity, the extension):
/// the date of the extension's version 1.0.0, 2026-11-26.
const DEFINITIONS_CREATED_UNIX_MS: u64 = 1_795_651_200_000;

/// STIX caps `number_observed` and sighting `count` at 999,999,999.
const STIX_MAX_COUNT: u64 = 999_999_999;

/// Who shares the incident: the operating organisation, configured per collector.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Producer {
    /// The organisation's name as the sector knows it (the STIX identity's `name`; also part
    /// of every identifier, so keep it stable).
    pub name: String,
    /// STIX industry sectors (`utilities`, `water`, `energy`...), from the STIX open
    /// vocabulary where possible.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sectors: Vec<String>,
    /// How the sector reaches the organisation's responders (free text).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contact_information: Option<String>,
}

impl Producer {
    pub fn new(name: impl Into<String>) -> Self {
        Producer {
            name: name.into(),
            sectors: Vec::new(),
            contact_information: None,
        }
    }

    /// The producer's STIX identity: UUIDv5 of its name.
    pub fn identity_id(&self) -> String {
        sdo_id("identity", &json!(["identity", self.name]))
    }
}

/// An incident as a STIX 2.1 bundle (see the module documentation). `now_unix_ms` is the
/// export time: the `modified` of objects that follow the incident's state.
pub fn bundle(detail: &IncidentDetail, producer: &Producer, now_unix_ms: u64) -> Value {
    let inc = &detail.incident;
    let exercise = inc.exercise;
    let producer_ref = producer.identity_id();
    let seed = |parts: Value| -> Value { json!([producer.name, inc.site, parts]) };
    let common = Common {
        producer_ref: &producer_ref,
        now_unix_ms,
        exercise,
    };
    let mut objects = Objects::default();

    objects.push(mamori_identity());
    objects.push(producer_identity(producer, &producer_ref, now_unix_ms));
    objects.push(extension_definition());

    let incident_id = sdo_id("incident", &seed(json!(["incident", inc.id])));

    // The observables of the affected assets, referenced from the extension.
    let mut assets_ext = Vec::new();
    for a in affected_assets(detail) {
        let address_ref = a.ip.map(|ip| objects.push(address(ip)));
        let mut m = Map::new();
        m.insert("asset".into(), json!(a.name));
        put_opt(&mut m, "address_ref", address_ref);
        m.insert("in_inventory".into(), json!(a.inventory.is_some()));
        if let Some(inv) = a.inventory {
            put_list(
                &mut m,
                "roles",
                inv.roles.iter().map(|r| r.as_str()).collect(),
            );
            put_list(&mut m, "units", inv.units.iter().collect());
            if let Some(id) = &inv.identity {
                put_opt(&mut m, "vendor", id.vendor.as_ref());
                put_opt(&mut m, "product", id.product.as_ref());
                put_opt(&mut m, "revision", id.revision.as_ref());
            }
            m.insert("criticality".into(), json!(inv.criticality.as_str()));
            put_list(&mut m, "hostnames", inv.hostnames.iter().collect());
            put_opt(&mut m, "description", inv.description.as_ref());
        }
        assets_ext.push(Value::Object(m));
    }

    // Per alert: observables, observed data, indicators of rogue hosts, sightings.
    let mut detections = Vec::new();
    let mut related: Vec<(String, u64)> = Vec::new();
    let mut indicators: Vec<(IpAddr, String)> = Vec::new();
    for sa in &detail.alerts {
        let od = observed_data(&mut objects, sa, &seed, &common);
        detections.push(detection(sa, od.as_deref()));
        let Some(od_id) = od else { continue };
        related.push((od_id.clone(), sa.received_unix_ms));
        let Some(ip) = rogue_source(&sa.alert) else {
            continue;
        };
        let indicator_id = match indicators.iter().find(|(i, _)| *i == ip) {
            Some((_, id)) => id.clone(),
            None => {
                let id = objects.push(indicator(detail, ip, &seed, &common));
                related.push((id.clone(), sa.received_unix_ms));
                indicators.push((ip, id.clone()));
                id
            }
        };
        objects.push(relationship(
            "based-on",
            &indicator_id,
            &od_id,
            sa.received_unix_ms,
            &common,
        ));
        objects.push(sighting(sa, &indicator_id, &od_id, &seed, &common));
    }

    // The ATT&CK for ICS techniques its alerts show, as attack patterns with MITRE's
    // references, each tied to the incident from when the first alert showing it arrived.
    let mut techniques: Vec<(String, u64)> = Vec::new();
    for sa in &detail.alerts {
        for t in sa
            .alert
            .attack
            .iter()
            .filter_map(|id| attack::technique(id))
        {
            let id = objects.push(attack_pattern(t, producer, &common));
            match techniques.iter_mut().find(|(i, _)| *i == id) {
                Some((_, at)) => *at = (*at).min(sa.received_unix_ms),
                None => techniques.push((id, sa.received_unix_ms)),
            }
        }
    }
    related.extend(techniques);

    objects.push(incident(
        detail,
        &incident_id,
        assets_ext,
        detections,
        &common,
    ));
    for (target, created) in related {
        objects.push(relationship(
            "related-to",
            &incident_id,
            &target,
            created.max(inc.detected_unix_ms),
            &common,
        ));
    }

    json!({
        "type": "bundle",
        "id": sdo_id("bundle", &seed(json!(["bundle", inc.id, now_unix_ms]))),
        "objects": objects.list,
    })
}

/// What every object of one export shares.
struct Common<'a> {
    producer_ref: &'a str,
    now_unix_ms: u64,
    exercise: bool,
}

/// The bundle's objects in insertion order, each id once (observables repeat across
/// alerts).
#[derive(Default)]
struct Objects {
    list: Vec<Value>,
    ids: BTreeSet<String>,
}

impl Objects {
    /// Adds `obj` unless an object with its id is already there; returns the id.
    fn push(&mut self, obj: Value) -> String {
        let id = obj
            .get("id")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        if self.ids.insert(id.clone()) {
            self.list.push(obj);
        }
        id
    }
}

/// `type--UUIDv5(MAMORI_NAMESPACE, name)`, `name` a JSON array (unambiguous, unlike a
/// joined string).
fn sdo_id(ty: &str, name: &Value) -> String {
    let name = name.to_string();
    format!("{ty}--{}", Uuid::new_v5(&MAMORI_NAMESPACE, name.as_bytes()))
}

/// An observable's id as STIX 2.1 §2.9 specifies: UUIDv5 in the STIX namespace over the
/// JCS-canonical JSON of its ID contributing properties.
fn sco_id(ty: &str, contributing: &Value) -> String {
    let mut name = String::new();
    canonical_json(contributing, &mut name);
    format!(
        "{ty}--{}",
        Uuid::new_v5(&STIX_SCO_NAMESPACE, name.as_bytes())
    )
}

/// JSON with object keys sorted and no whitespace: RFC 8785 for the values observables'
/// ids contain (strings, integers, arrays, objects). Sorted here rather than trusting
/// `serde_json`'s map order, which a feature elsewhere in the build could change.
fn canonical_json(v: &Value, out: &mut String) {
    match v {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort_by(|a, b| a.encode_utf16().cmp(b.encode_utf16()));
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(':');
                if let Some(x) = m.get(k) {
                    canonical_json(x, out);
                }
            }
            out.push('}');
        }
        Value::Array(a) => {
            out.push('[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                canonical_json(x, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

/// `labels`: `exercise` first when it is one, then `extra`; absent when empty.
fn put_labels(m: &mut Map<String, Value>, exercise: bool, extra: &[&str]) {
    let mut labels: Vec<&str> = Vec::new();
    if exercise {
        labels.push("exercise");
    }
    labels.extend_from_slice(extra);
    put_list(m, "labels", labels);
}

fn put_opt<T: Serialize>(m: &mut Map<String, Value>, key: &str, v: Option<T>) {
    if let Some(v) = v {
        m.insert(key.into(), json!(v));
    }
}

/// STIX lists must not be empty: an empty one is left out.
fn put_list<T: Serialize>(m: &mut Map<String, Value>, key: &str, v: Vec<T>) {
    if !v.is_empty() {
        m.insert(key.into(), json!(v));
    }
}

/// Drops nulls and empty lists (STIX has no null values), recursively, from data we pass
/// through (evidence).
fn scrub(v: &Value) -> Option<Value> {
    match v {
        Value::Null => None,
        Value::Array(a) => {
            let a: Vec<Value> = a.iter().filter_map(scrub).collect();
            (!a.is_empty()).then_some(Value::Array(a))
        }
        Value::Object(o) => {
            let o: Map<String, Value> = o
                .iter()
                .filter_map(|(k, v)| Some((k.clone(), scrub(v)?)))
                .collect();
            (!o.is_empty()).then_some(Value::Object(o))
        }
        other => Some(other.clone()),
    }
}

/// The properties every SDO and SRO starts with.
fn core(
    ty: &str,
    id: &str,
    created_by_ref: &str,
    created_ms: u64,
    modified_ms: u64,
) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("type".into(), json!(ty));
    m.insert("spec_version".into(), json!("2.1"));
    m.insert("id".into(), json!(id));
    m.insert("created_by_ref".into(), json!(created_by_ref));
    m.insert("created".into(), json!(stix_time_ms(created_ms)));
    // `modified` must not precede `created`, whatever the caller's clock says.
    m.insert(
        "modified".into(),
        json!(stix_time_ms(modified_ms.max(created_ms))),
    );
    m
}

fn mamori_identity() -> Value {
    let mut m = core(
        "identity",
        MAMORI_IDENTITY_ID,
        MAMORI_IDENTITY_ID,
        DEFINITIONS_CREATED_UNIX_MS,
        DEFINITIONS_CREATED_UNIX_MS,
    );
    m.insert("name".into(), json!("Mamori"));
    m.insert(
        "description".into(),
        json!("Passive OT/ICS network monitoring: it learns an installation's traffic and raises the alerts this incident groups."),
    );
    m.insert("identity_class".into(), json!("system"));
    Value::Object(m)
}

fn producer_identity(producer: &Producer, id: &str, now_unix_ms: u64) -> Value {
    // Its content is the configuration's, which may change: a new `modified` each export.
    let mut m = core("identity", id, id, DEFINITIONS_CREATED_UNIX_MS, now_unix_ms);
    m.insert("name".into(), json!(producer.name));
    m.insert("identity_class".into(), json!("organization"));
    put_list(&mut m, "sectors", producer.sectors.iter().collect());
    put_opt(
        &mut m,
        "contact_information",
        producer.contact_information.as_ref(),
    );
    Value::Object(m)
}

fn extension_definition() -> Value {
    let mut m = core(
        "extension-definition",
        EXTENSION_DEFINITION_ID,
        MAMORI_IDENTITY_ID,
        DEFINITIONS_CREATED_UNIX_MS,
        DEFINITIONS_CREATED_UNIX_MS,
    );
    m.insert("name".into(), json!("Mamori incident"));
    m.insert(
        "description".into(),
        json!("Mamori's incident and alert fields: site, status, severity, detection and handling times, affected assets with their inventory data, service impact, exercise flag and timeline on an incident; the detector, kind and evidence of an alert on observed-data."),
    );
    m.insert("schema".into(), json!(EXTENSION_SCHEMA_URL));
    m.insert("version".into(), json!(EXTENSION_VERSION));
    m.insert("extension_types".into(), json!(["property-extension"]));
    Value::Object(m)
}

fn extension(fields: Map<String, Value>) -> Value {
    let mut ext = Map::new();
    ext.insert("extension_type".into(), json!("property-extension"));
    ext.extend(fields);
    let mut by_definition = Map::new();
    by_definition.insert(EXTENSION_DEFINITION_ID.into(), Value::Object(ext));
    Value::Object(by_definition)
}

fn address(ip: IpAddr) -> Value {
    let ty = match ip {
        IpAddr::V4(_) => "ipv4-addr",
        IpAddr::V6(_) => "ipv6-addr",
    };
    let value = ip.to_string();
    json!({
        "type": ty,
        "spec_version": "2.1",
        "id": sco_id(ty, &json!({ "value": value })),
        "value": value,
    })
}

/// Detectors that read Modbus/TCP.
fn is_modbus(alert: &Alert) -> bool {
    matches!(
        alert.detector,
        DetectorName::PollingCycle | DetectorName::ProcessValue | DetectorName::Protocol
    ) || alert.evidence.contains_key("func")
}

/// A protocol name from the wire fit for `protocols` (IANA service names: lowercase letters,
/// digits and hyphens), or nothing.
fn service_name(s: &str) -> Option<String> {
    let ok = !s.is_empty()
        && s.len() <= 15
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    ok.then(|| s.to_owned())
}

/// `protocols` of an alert's traffic, outermost first (`ipv4`, `tcp`, `mbap`). `mbap` is
/// Modbus/TCP's IANA service name.
fn protocols(alert: &Alert, ip: IpAddr) -> Vec<String> {
    let mut p = vec![
        match ip {
            IpAddr::V4(_) => "ipv4",
            IpAddr::V6(_) => "ipv6",
        }
        .to_owned(),
    ];
    let transport = alert
        .evidence
        .get("transport")
        .and_then(Value::as_str)
        .and_then(service_name);
    let service = alert
        .evidence
        .get("service")
        .and_then(Value::as_str)
        .map(|s| if s == "modbus" { "mbap" } else { s })
        .and_then(service_name);
    match (transport, service) {
        (Some(t), s) => {
            p.push(t);
            p.extend(s);
        }
        (None, _) if is_modbus(alert) => p.extend(["tcp".to_owned(), "mbap".to_owned()]),
        (None, _) if alert.detector == DetectorName::Syslog => p.push("syslog".to_owned()),
        (None, s) => p.extend(s),
    }
    if is_modbus(alert) && !p.iter().any(|x| x == "mbap") {
        p.push("mbap".to_owned());
    }
    p
}

fn port(alert: &Alert, key: &str) -> Option<u64> {
    alert
        .evidence
        .get(key)
        .and_then(Value::as_u64)
        .filter(|p| *p <= 65_535)
}

/// The observables and the `observed-data` of one alert; `None` when the alert names no
/// address (STIX observed data must reference at least one observable).
fn observed_data(
    objects: &mut Objects,
    sa: &StoredAlert,
    seed: &impl Fn(Value) -> Value,
    c: &Common<'_>,
) -> Option<String> {
    let a = &sa.alert;
    let src = a.src_ip.map(|ip| objects.push(address(ip)));
    let dst = a.dst_ip.map(|ip| objects.push(address(ip)));
    let mut refs: Vec<String> = src.iter().chain(dst.iter()).cloned().collect();
    if let Some(ip) = a.src_ip.or(a.dst_ip) {
        let mut contributing = Map::new();
        put_opt(&mut contributing, "src_ref", src.as_ref());
        put_opt(&mut contributing, "dst_ref", dst.as_ref());
        put_opt(&mut contributing, "src_port", port(a, "src_port"));
        put_opt(&mut contributing, "dst_port", port(a, "dst_port"));
        contributing.insert("protocols".into(), json!(protocols(a, ip)));
        let contributing = Value::Object(contributing);
        let id = sco_id("network-traffic", &contributing);
        let mut traffic = Map::new();
        traffic.insert("type".into(), json!("network-traffic"));
        traffic.insert("spec_version".into(), json!("2.1"));
        traffic.insert("id".into(), json!(id));
        if let Value::Object(f) = contributing {
            traffic.extend(f);
        }
        refs.push(objects.push(Value::Object(traffic)));
    } else if let Some(ip) = a.asset.as_deref().and_then(super::asset_ip) {
        refs.push(objects.push(address(ip)));
    }
    if refs.is_empty() {
        return None;
    }
    let id = sdo_id("observed-data", &seed(json!(["observed-data", sa.id])));
    let mut m = core(
        "observed-data",
        &id,
        c.producer_ref,
        sa.received_unix_ms,
        c.now_unix_ms,
    );
    m.insert("first_observed".into(), json!(stix_time(a.ts)));
    m.insert(
        "last_observed".into(),
        json!(stix_time(a.last_ts.max(a.ts))),
    );
    m.insert(
        "number_observed".into(),
        json!(a.count.clamp(1, STIX_MAX_COUNT)),
    );
    m.insert("object_refs".into(), json!(refs));
    put_labels(&mut m, c.exercise, &[a.detector.as_str(), &a.kind]);
    let mut ext = Map::new();
    ext.insert("alert_id".into(), json!(sa.id));
    ext.insert("detector".into(), json!(a.detector.as_str()));
    ext.insert("kind".into(), json!(a.kind));
    ext.insert("severity".into(), json!(a.severity.as_str()));
    ext.insert("summary".into(), json!(a.summary));
    put_opt(&mut ext, "score", a.score.is_finite().then_some(a.score));
    put_opt(&mut ext, "asset", a.asset.as_ref());
    ext.insert("subject".into(), json!(a.subject));
    put_opt(&mut ext, "evidence", scrub(&json!(a.evidence)));
    m.insert("extensions".into(), extension(ext));
    Some(objects.push(Value::Object(m)))
}

/// The incident extension's record of one alert.
fn detection(sa: &StoredAlert, observed_data_ref: Option<&str>) -> Value {
    let a = &sa.alert;
    let mut m = Map::new();
    m.insert("alert_id".into(), json!(sa.id));
    m.insert("detector".into(), json!(a.detector.as_str()));
    m.insert("kind".into(), json!(a.kind));
    m.insert("severity".into(), json!(a.severity.as_str()));
    m.insert("summary".into(), json!(a.summary));
    m.insert("count".into(), json!(a.count));
    m.insert("first_seen".into(), json!(stix_time(a.ts)));
    m.insert("last_seen".into(), json!(stix_time(a.last_ts.max(a.ts))));
    put_opt(&mut m, "score", a.score.is_finite().then_some(a.score));
    put_list(&mut m, "techniques", a.attack.iter().collect());
    put_opt(&mut m, "evidence", scrub(&json!(a.evidence)));
    put_opt(&mut m, "observed_data_ref", observed_data_ref);
    Value::Object(m)
}

/// The source of an alert that names it as a host never seen during learning: the allowlist
/// detector's `new_host` with the source as subject. Only those: an indicator leaves the
/// installation for other members' blocklists, and a known engineering station that did
/// something new is not a rogue host.
fn rogue_source(a: &Alert) -> Option<IpAddr> {
    let src = a.src_ip?;
    // The subject is the host itself, per service class (`10.0.0.66/modbus`), or the host
    // alone in alerts stored before service classes.
    let host = src.to_string();
    let about_src = a
        .subject
        .strip_prefix(host.as_str())
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'));
    (a.detector == DetectorName::Allowlist && a.kind == "new_host" && about_src).then_some(src)
}

fn indicator(
    detail: &IncidentDetail,
    ip: IpAddr,
    seed: &impl Fn(Value) -> Value,
    c: &Common<'_>,
) -> Value {
    // Its first alert gives `created` and `valid_from`: the earliest occurrence.
    let alerts = detail
        .alerts
        .iter()
        .filter(|sa| rogue_source(&sa.alert) == Some(ip));
    let created = alerts
        .clone()
        .map(|sa| sa.received_unix_ms)
        .min()
        .unwrap_or(detail.incident.detected_unix_ms);
    let valid_from = alerts
        .map(|sa| sa.alert.ts)
        .min()
        .unwrap_or(detail.incident.first_seen);
    let (ty, family) = match ip {
        IpAddr::V4(_) => ("ipv4-addr", "IPv4"),
        IpAddr::V6(_) => ("ipv6-addr", "IPv6"),
    };
    let id = sdo_id(
        "indicator",
        &seed(json!(["indicator", detail.incident.id, ip])),
    );
    let mut m = core("indicator", &id, c.producer_ref, created, c.now_unix_ms);
    m.insert(
        "name".into(),
        json!(format!(
            "{}Host never seen during learning: {ip}",
            if c.exercise { "EXERCISE: " } else { "" }
        )),
    );
    m.insert(
        "description".into(),
        json!(format!(
            "{}The {family} address {ip} appeared on the OT network of site {} and was never seen while Mamori learned its traffic. An address inside the operator's network: meaningful to the operator and its responders, not a global blocklist entry.",
            if c.exercise {
                "EXERCISE traffic, not a real attack. "
            } else {
                ""
            },
            detail.incident.site
        )),
    );
    m.insert("indicator_types".into(), json!(["anomalous-activity"]));
    // An IP's text form holds no quote or backslash: nothing to escape in the pattern.
    m.insert("pattern".into(), json!(format!("[{ty}:value = '{ip}']")));
    m.insert("pattern_type".into(), json!("stix"));
    m.insert("pattern_version".into(), json!("2.1"));
    m.insert("valid_from".into(), json!(stix_time(valid_from)));
    put_labels(&mut m, c.exercise, &["ics"]);
    Value::Object(m)
}

fn sighting(
    sa: &StoredAlert,
    indicator_id: &str,
    observed_data_id: &str,
    seed: &impl Fn(Value) -> Value,
    c: &Common<'_>,
) -> Value {
    let a = &sa.alert;
    let id = sdo_id("sighting", &seed(json!(["sighting", sa.id])));
    let mut m = core(
        "sighting",
        &id,
        c.producer_ref,
        sa.received_unix_ms,
        c.now_unix_ms,
    );
    m.insert("first_seen".into(), json!(stix_time(a.ts)));
    m.insert("last_seen".into(), json!(stix_time(a.last_ts.max(a.ts))));
    m.insert("count".into(), json!(a.count.min(STIX_MAX_COUNT)));
    m.insert("sighting_of_ref".into(), json!(indicator_id));
    m.insert("observed_data_refs".into(), json!([observed_data_id]));
    m.insert("where_sighted_refs".into(), json!([c.producer_ref]));
    put_labels(&mut m, c.exercise, &[]);
    Value::Object(m)
}

/// An ATT&CK for ICS technique. Its id is fixed by the producer and the technique alone, so
/// every bundle of one installation names a technique with the same object, and its dates are
/// those of the catalogue entry, not of the export.
fn attack_pattern(t: &Technique, producer: &Producer, c: &Common<'_>) -> Value {
    let id = sdo_id(
        "attack-pattern",
        &json!([producer.name, "attack-pattern", t.id]),
    );
    let mut m = core(
        "attack-pattern",
        &id,
        c.producer_ref,
        ATTACK_CATALOGUE_UNIX_MS,
        ATTACK_CATALOGUE_UNIX_MS,
    );
    m.insert("name".into(), json!(t.name));
    m.insert(
        "external_references".into(),
        json!([{
            "source_name": "mitre-ics-attack",
            "external_id": t.id,
            "url": t.url(),
        }]),
    );
    m.insert(
        "kill_chain_phases".into(),
        json!([{
            "kill_chain_name": "mitre-ics-attack",
            "phase_name": t.tactic.to_lowercase().replace(' ', "-"),
        }]),
    );
    Value::Object(m)
}

/// A relationship; its content is fixed by its ends, so `modified` is `created`.
fn relationship(
    relationship_type: &str,
    source: &str,
    target: &str,
    created_ms: u64,
    c: &Common<'_>,
) -> Value {
    let id = sdo_id(
        "relationship",
        &json!(["relationship", relationship_type, source, target]),
    );
    let mut m = core("relationship", &id, c.producer_ref, created_ms, created_ms);
    m.insert("relationship_type".into(), json!(relationship_type));
    m.insert("source_ref".into(), json!(source));
    m.insert("target_ref".into(), json!(target));
    put_labels(&mut m, c.exercise, &[]);
    Value::Object(m)
}

fn impact_name(i: Impact) -> &'static str {
    match i {
        Impact::ProcessControl => "process_control",
        Impact::ProcessState => "process_state",
        Impact::Availability => "availability",
        Impact::Reconnaissance => "reconnaissance",
        Impact::Unclassified => "unclassified",
    }
}

fn incident(
    detail: &IncidentDetail,
    id: &str,
    affected: Vec<Value>,
    detections: Vec<Value>,
    c: &Common<'_>,
) -> Value {
    let inc = &detail.incident;
    let impact = service_impact(detail);
    let mut m = core(
        "incident",
        id,
        c.producer_ref,
        inc.detected_unix_ms,
        c.now_unix_ms,
    );
    let name = if inc.title.trim().is_empty() {
        format!("Incident {} at {}", inc.id, inc.site)
    } else {
        inc.title.clone()
    };
    m.insert("name".into(), json!(name));
    let status = match inc.status {
        IncidentStatus::Open => "open, not yet taken by a responder".to_owned(),
        IncidentStatus::Acknowledged => "acknowledged, being handled".to_owned(),
        IncidentStatus::Resolved => "resolved".to_owned(),
    };
    m.insert(
        "description".into(),
        json!(format!(
            "{}{} severity incident at site {}, {status}. {} alert(s) from {} asset(s) between {} and {}. {impact}",
            if c.exercise {
                "EXERCISE (a drill, not a real incident). "
            } else {
                ""
            },
            capitalised(inc.severity.as_str()),
            inc.site,
            inc.alert_count,
            inc.assets.len(),
            stix_time(inc.first_seen),
            stix_time(inc.last_seen.max(inc.first_seen)),
        )),
    );
    let severity_label = format!("severity-{}", inc.severity.as_str());
    put_labels(&mut m, c.exercise, &["ics", &severity_label]);

    let mut ext = Map::new();
    ext.insert("incident_id".into(), json!(inc.id));
    ext.insert("site".into(), json!(inc.site));
    ext.insert("status".into(), json!(inc.status.as_str()));
    ext.insert("severity".into(), json!(inc.severity.as_str()));
    ext.insert("first_seen".into(), json!(stix_time(inc.first_seen)));
    ext.insert(
        "last_seen".into(),
        json!(stix_time(inc.last_seen.max(inc.first_seen))),
    );
    ext.insert("detected".into(), json!(stix_time_ms(inc.detected_unix_ms)));
    put_opt(
        &mut ext,
        "acknowledged",
        inc.acknowledged_unix_ms.map(stix_time_ms),
    );
    put_opt(&mut ext, "acknowledged_by", inc.acknowledged_by.as_ref());
    put_opt(&mut ext, "resolved", inc.resolved_unix_ms.map(stix_time_ms));
    put_opt(&mut ext, "resolved_by", inc.resolved_by.as_ref());
    put_opt(&mut ext, "time_to_detect_ms", time_to_detect_ms(inc));
    ext.insert("alert_count".into(), json!(inc.alert_count));
    put_list(&mut ext, "detectors", inc.detectors.iter().collect());
    put_list(&mut ext, "techniques", inc.techniques.iter().collect());
    put_opt(&mut ext, "asset", inc.asset.as_ref());
    put_list(&mut ext, "affected_assets", affected);
    put_list(
        &mut ext,
        "impacts",
        impacts(detail).into_iter().map(impact_name).collect(),
    );
    ext.insert("service_impact".into(), json!(impact));
    ext.insert("exercise".into(), json!(inc.exercise));
    let timeline: Vec<Value> = inc
        .timeline
        .iter()
        .map(|t| {
            let mut e = Map::new();
            e.insert("at".into(), json!(stix_time_ms(t.at_unix_ms)));
            e.insert("kind".into(), json!(t.kind));
            put_opt(&mut e, "actor", t.actor.as_ref());
            e.insert("text".into(), json!(t.text));
            Value::Object(e)
        })
        .collect();
    put_list(&mut ext, "timeline", timeline);
    put_list(&mut ext, "detections", detections);
    m.insert("extensions".into(), extension(ext));
    Value::Object(m)
}

fn capitalised(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
    use super::*;
    use crate::export::fixtures;

    const NOW: u64 = fixtures::T0_MS + 7_200_000;

    fn producer() -> Producer {
        Producer {
            name: "Stadtwerke Nord".into(),
            sectors: vec!["utilities".into(), "water".into()],
            contact_information: Some("soc@example.invalid".into()),
        }
    }

    fn objects(b: &Value) -> &Vec<Value> {
        b["objects"].as_array().unwrap()
    }

    fn of_type<'a>(b: &'a Value, ty: &str) -> Vec<&'a Value> {
        objects(b).iter().filter(|o| o["type"] == ty).collect()
    }

    fn all_fixtures() -> Vec<IncidentDetail> {
        vec![
            fixtures::ordinary(),
            fixtures::ipv6(),
            fixtures::exercise(),
            fixtures::no_assets(),
            fixtures::hostile(),
        ]
    }

    fn is_stix_time(s: &str) -> bool {
        let b = s.as_bytes();
        b.len() == 24
            && b[4] == b'-'
            && b[10] == b'T'
            && b[19] == b'.'
            && b[23] == b'Z'
            && b[20..23].iter().all(u8::is_ascii_digit)
    }

    /// Every `*_ref`/`*_refs` value anywhere (extensions included).
    fn refs(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(m) => {
                for (k, x) in m {
                    if k.ends_with("_ref") {
                        out.push(x.as_str().unwrap().to_owned());
                    } else if k.ends_with("_refs") {
                        out.extend(
                            x.as_array()
                                .unwrap()
                                .iter()
                                .map(|r| r.as_str().unwrap().to_owned()),
                        );
                    } else {
                        refs(x, out);
                    }
                }
            }
            Value::Array(a) => a.iter().for_each(|x| refs(x, out)),
            _ => {}
        }
    }

    #[test]
    fn same_incident_exports_byte_identically() {
        for d in all_fixtures() {
            let a = serde_json::to_string(&bundle(&d, &producer(), NOW)).unwrap();
            let b = serde_json::to_string(&bundle(&d.clone(), &producer(), NOW)).unwrap();
            assert_eq!(a, b);
        }
    }

    #[test]
    fn a_later_export_keeps_every_object_id() {
        let d = fixtures::ordinary();
        let ids = |now| -> Vec<String> {
            objects(&bundle(&d, &producer(), now))
                .iter()
                .map(|o| o["id"].as_str().unwrap().to_owned())
                .collect()
        };
        assert_eq!(ids(NOW), ids(NOW + 86_400_000));
    }

    #[test]
    fn every_object_has_the_required_properties() {
        for d in all_fixtures() {
            let b = bundle(&d, &producer(), NOW);
            assert_eq!(b["type"], "bundle");
            assert!(b["id"].as_str().unwrap().starts_with("bundle--"));
            let mut seen = BTreeSet::new();
            for o in objects(&b) {
                let ty = o["type"].as_str().unwrap();
                let id = o["id"].as_str().unwrap();
                assert!(id.starts_with(&format!("{ty}--")), "{id}");
                assert!(Uuid::parse_str(&id[ty.len() + 2..]).is_ok(), "{id}");
                assert!(seen.insert(id.to_owned()), "duplicate {id}");
                assert_eq!(o["spec_version"], "2.1", "{id}");
                let sco = matches!(ty, "ipv4-addr" | "ipv6-addr" | "network-traffic");
                if !sco {
                    for k in ["created", "modified"] {
                        assert!(is_stix_time(o[k].as_str().unwrap()), "{id} {k}");
                    }
                    assert!(o["created"].as_str() <= o["modified"].as_str(), "{id}");
                    assert!(o["created_by_ref"].is_string(), "{id}");
                }
                let required: &[&str] = match ty {
                    "identity" => &["name", "identity_class"],
                    "extension-definition" => &["name", "schema", "version", "extension_types"],
                    "incident" => &["name", "description", "extensions"],
                    "observed-data" => &[
                        "first_observed",
                        "last_observed",
                        "number_observed",
                        "object_refs",
                    ],
                    "indicator" => &["pattern", "pattern_type", "valid_from"],
                    "sighting" => &[
                        "sighting_of_ref",
                        "observed_data_refs",
                        "where_sighted_refs",
                        "first_seen",
                        "last_seen",
                        "count",
                    ],
                    "relationship" => &["relationship_type", "source_ref", "target_ref"],
                    "attack-pattern" => &["name", "external_references", "kill_chain_phases"],
                    "ipv4-addr" | "ipv6-addr" => &["value"],
                    "network-traffic" => &["protocols"],
                    other => panic!("unexpected type {other}"),
                };
                for k in required {
                    assert!(!o[*k].is_null(), "{id} lacks {k}");
                }
            }
            assert_eq!(of_type(&b, "incident").len(), 1);
            assert_eq!(of_type(&b, "extension-definition").len(), 1);
            assert_eq!(of_type(&b, "identity").len(), 2);
        }
    }

    #[test]
    fn every_reference_points_into_the_bundle() {
        for d in all_fixtures() {
            let b = bundle(&d, &producer(), NOW);
            let ids: BTreeSet<&str> = objects(&b)
                .iter()
                .map(|o| o["id"].as_str().unwrap())
                .collect();
            let mut r = Vec::new();
            refs(&b, &mut r);
            assert!(!r.is_empty());
            for id in r {
                assert!(ids.contains(id.as_str()), "dangling {id}");
            }
            // The extension key names the definition in the bundle.
            for o in objects(&b) {
                if let Some(ext) = o.get("extensions") {
                    for k in ext.as_object().unwrap().keys() {
                        assert!(ids.contains(k.as_str()), "dangling extension {k}");
                    }
                }
            }
        }
    }

    #[test]
    fn incident_carries_our_fields_in_the_extension() {
        let d = fixtures::ordinary();
        let b = bundle(&d, &producer(), NOW);
        let inc = of_type(&b, "incident")[0];
        assert_eq!(inc["name"], d.incident.title);
        assert_eq!(inc["created"], "2024-05-01T10:00:04.000Z");
        assert_eq!(inc["modified"], "2024-05-01T12:00:00.000Z");
        assert_eq!(inc["created_by_ref"], producer().identity_id());
        let ext = &inc["extensions"][EXTENSION_DEFINITION_ID];
        assert_eq!(ext["extension_type"], "property-extension");
        assert_eq!(ext["site"], "plant-north");
        assert_eq!(ext["status"], "acknowledged");
        assert_eq!(ext["severity"], "critical");
        assert_eq!(ext["first_seen"], "2024-05-01T10:00:00.000Z");
        assert_eq!(ext["detected"], "2024-05-01T10:00:04.000Z");
        assert_eq!(ext["acknowledged"], "2024-05-01T10:10:00.000Z");
        assert_eq!(ext["acknowledged_by"], "oncall-anna");
        assert!(ext.get("resolved").is_none());
        assert_eq!(ext["time_to_detect_ms"], 4_000);
        assert_eq!(ext["exercise"], false);
        assert_eq!(ext["impacts"], json!(["process_control", "availability"]));
        assert_eq!(ext["timeline"].as_array().unwrap().len(), 4);
        assert_eq!(ext["detections"].as_array().unwrap().len(), 3);
        let assets = ext["affected_assets"].as_array().unwrap();
        assert_eq!(assets.len(), 3);
        let plc = assets.iter().find(|a| a["asset"] == "10.0.0.5/1").unwrap();
        assert_eq!(plc["vendor"], "Schneider Electric");
        assert_eq!(plc["criticality"], "critical");
        assert_eq!(plc["roles"], json!(["modbus_server"]));
        let rogue = assets.iter().find(|a| a["asset"] == "10.0.0.66").unwrap();
        assert_eq!(rogue["in_inventory"], false);
        // Nulls from the evidence are dropped (STIX has none).
        let det = &ext["detections"][0];
        assert!(det["evidence"].get("exception").is_none());
        assert!(
            !inc["labels"]
                .as_array()
                .unwrap()
                .contains(&json!("exercise"))
        );
    }

    #[test]
    fn the_rogue_source_becomes_an_indicator_with_its_sighting() {
        let b = bundle(&fixtures::ordinary(), &producer(), NOW);
        let ind = of_type(&b, "indicator");
        assert_eq!(ind.len(), 1);
        assert_eq!(ind[0]["pattern"], "[ipv4-addr:value = '10.0.0.66']");
        assert_eq!(ind[0]["pattern_type"], "stix");
        assert_eq!(ind[0]["valid_from"], "2024-05-01T10:00:00.000Z");
        let s = of_type(&b, "sighting");
        assert_eq!(s.len(), 1);
        assert_eq!(s[0]["sighting_of_ref"], ind[0]["id"]);
        assert_eq!(
            s[0]["where_sighted_refs"],
            json!([producer().identity_id()])
        );
        assert_eq!(s[0]["count"], 3);
        assert_eq!(s[0]["first_seen"], "2024-05-01T10:00:00.000Z");
        assert_eq!(s[0]["last_seen"], "2024-05-01T10:00:30.000Z");
        let od = of_type(&b, "observed-data");
        assert_eq!(od.len(), 3);
        assert_eq!(s[0]["observed_data_refs"], json!([od[0]["id"]]));
        let rels = of_type(&b, "relationship");
        let based_on: Vec<_> = rels
            .iter()
            .filter(|r| r["relationship_type"] == "based-on")
            .collect();
        assert_eq!(based_on.len(), 1);
        assert_eq!(based_on[0]["source_ref"], ind[0]["id"]);
        // The incident relates to each observed data, the indicator and each technique.
        let inc_id = &of_type(&b, "incident")[0]["id"];
        assert_eq!(
            rels.iter()
                .filter(|r| r["relationship_type"] == "related-to" && r["source_ref"] == *inc_id)
                .count(),
            4 + of_type(&b, "attack-pattern").len()
        );
        // The traffic of a Modbus write: IPv4, TCP, Modbus/TCP (`mbap`).
        let nt = of_type(&b, "network-traffic");
        assert!(!nt.is_empty());
        assert_eq!(nt[0]["protocols"], json!(["ipv4", "tcp", "mbap"]));
    }

    #[test]
    fn techniques_become_attack_patterns_with_mitre_references() {
        for d in all_fixtures() {
            let b = bundle(&d, &producer(), NOW);
            let inc_id = of_type(&b, "incident")[0]["id"]
                .as_str()
                .unwrap()
                .to_owned();
            let shown: BTreeSet<&str> = d
                .alerts
                .iter()
                .flat_map(|a| a.alert.attack.iter().map(String::as_str))
                .collect();
            let patterns = of_type(&b, "attack-pattern");
            assert_eq!(patterns.len(), shown.len(), "{shown:?}");
            for p in patterns {
                let r = &p["external_references"][0];
                assert_eq!(r["source_name"], "mitre-ics-attack");
                let tid = r["external_id"].as_str().unwrap();
                assert!(shown.contains(tid), "{tid}");
                assert_eq!(
                    r["url"],
                    format!("https://attack.mitre.org/techniques/{tid}/")
                );
                assert_eq!(p["name"], attack::technique(tid).unwrap().name);
                assert_eq!(
                    p["kill_chain_phases"][0]["kill_chain_name"],
                    "mitre-ics-attack"
                );
                let tied = of_type(&b, "relationship").iter().any(|r| {
                    r["relationship_type"] == "related-to"
                        && r["source_ref"] == *inc_id
                        && r["target_ref"] == p["id"]
                });
                assert!(tied, "{tid} not tied to the incident");
            }
            let ext = &of_type(&b, "incident")[0]["extensions"][EXTENSION_DEFINITION_ID];
            let listed: BTreeSet<&str> = ext["techniques"]
                .as_array()
                .map(|a| a.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            assert_eq!(listed, shown);
        }
        assert!(
            all_fixtures()
                .iter()
                .any(|d| !d.incident.techniques.is_empty()),
            "no fixture shows a technique"
        );
    }

    #[test]
    fn ipv6_assets_become_ipv6_observables_and_patterns() {
        let b = bundle(&fixtures::ipv6(), &producer(), NOW);
        assert!(of_type(&b, "ipv4-addr").is_empty());
        assert_eq!(of_type(&b, "ipv6-addr").len(), 3);
        assert_eq!(
            of_type(&b, "indicator")[0]["pattern"],
            "[ipv6-addr:value = 'fd00::66']"
        );
        assert_eq!(of_type(&b, "network-traffic")[0]["protocols"][0], "ipv6");
    }

    #[test]
    fn everything_of_an_exercise_is_labelled_so() {
        let b = bundle(&fixtures::exercise(), &producer(), NOW);
        for o in objects(&b) {
            let ty = o["type"].as_str().unwrap();
            if matches!(
                ty,
                "incident" | "observed-data" | "indicator" | "sighting" | "relationship"
            ) {
                assert!(
                    o["labels"].as_array().unwrap().contains(&json!("exercise")),
                    "{}",
                    o["id"]
                );
            }
        }
        let inc = of_type(&b, "incident")[0];
        assert!(inc["description"].as_str().unwrap().starts_with("EXERCISE"));
        assert_eq!(inc["extensions"][EXTENSION_DEFINITION_ID]["exercise"], true);
        assert_eq!(
            inc["extensions"][EXTENSION_DEFINITION_ID]["resolved"],
            "2024-05-01T11:00:00.000Z"
        );
        assert!(
            of_type(&b, "indicator")[0]["name"]
                .as_str()
                .unwrap()
                .starts_with("EXERCISE")
        );
    }

    #[test]
    fn an_incident_without_addresses_has_no_observed_data() {
        let b = bundle(&fixtures::no_assets(), &producer(), NOW);
        assert!(of_type(&b, "observed-data").is_empty());
        assert!(of_type(&b, "indicator").is_empty());
        assert!(of_type(&b, "relationship").is_empty());
        let ext = &of_type(&b, "incident")[0]["extensions"][EXTENSION_DEFINITION_ID];
        assert!(ext.get("affected_assets").is_none());
        assert!(ext.get("timeline").is_none());
        assert_eq!(ext["detections"].as_array().unwrap().len(), 1);
        assert!(ext["detections"][0].get("observed_data_ref").is_none());
    }

    #[test]
    fn observable_ids_follow_the_stix_algorithm() {
        // Python: uuid.uuid5(UUID('00abedb4-aa42-557c-b79e-1c1b1b8ed0c1'),
        // '{"value":"10.0.0.66"}')
        assert_eq!(
            address("10.0.0.66".parse().unwrap())["id"],
            "ipv4-addr--54cb5317-1ee8-5e84-9450-ca7c04fb9d0a"
        );
        let mut s = String::new();
        canonical_json(&json!({"b": [1, "x"], "a": {"d": 1, "c": true}}), &mut s);
        assert_eq!(s, r#"{"a":{"c":true,"d":1},"b":[1,"x"]}"#);
    }

    #[test]
    fn fixed_ids_are_the_documented_uuidv5() {
        assert_eq!(
            MAMORI_IDENTITY_ID,
            format!(
                "identity--{}",
                Uuid::new_v5(&MAMORI_NAMESPACE, b"identity/mamori")
            )
        );
        assert_eq!(
            EXTENSION_DEFINITION_ID,
            format!(
                "extension-definition--{}",
                Uuid::new_v5(&MAMORI_NAMESPACE, b"extension-definition/incident")
            )
        );
    }

    #[test]
    fn hostile_strings_survive_as_data() {
        let d = fixtures::hostile();
        let b = bundle(&d, &producer(), NOW);
        let inc = of_type(&b, "incident")[0];
        assert_eq!(inc["name"], d.incident.title);
        // JSON string escaping carries the payload intact, nothing more.
        let text = serde_json::to_string(&b).unwrap();
        let back: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(back, b);
    }

    #[test]
    fn producer_config_rejects_unknown_fields() {
        let p: Producer = serde_json::from_value(json!({"name": "X"})).unwrap();
        assert_eq!(p, Producer::new("X"));
        assert!(serde_json::from_value::<Producer>(json!({"name": "X", "nmae": 1})).is_err());
    }
}
