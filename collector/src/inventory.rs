//! The asset inventory, kept from the event stream: every host seen per site, what it does
//! (Modbus client or server, syslog sender, other), the unit ids it serves or addresses, its
//! device identification (Modbus 43/14), first and last seen. A device whose identification
//! changes (another vendor, product or revision: a firmware change or a swapped device) is
//! an alert: a supply-chain and integrity concern an operator must confirm.
//!
//! Pure and bounded: at most `max_assets_per_site` hosts per site; hosts beyond are counted,
//! not tracked. The operator's fields (criticality, description) are kept as stored.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use mamori_models::detect::{Alert, DetectorName, Severity};
use mamori_models::{Event, ModbusEvent, Timestamp};

use crate::incident::{Asset, Criticality, DeviceIdentity, Role};

/// Every site's hosts, with the entries changed since the last [`Inventory::take_changed`].
#[derive(Debug, Default)]
pub struct Inventory {
    sites: BTreeMap<String, BTreeMap<IpAddr, Asset>>,
    changed: BTreeSet<(String, IpAddr)>,
    max_assets_per_site: usize,
    /// Hosts not tracked because their site was full.
    pub untracked: u64,
}

impl Inventory {
    pub fn new(max_assets_per_site: usize) -> Self {
        Inventory {
            max_assets_per_site,
            ..Inventory::default()
        }
    }

    /// Takes back what the store has (at start).
    pub fn load(&mut self, assets: Vec<Asset>) {
        for a in assets {
            self.sites
                .entry(a.site.clone())
                .or_default()
                .insert(a.ip, a);
        }
    }

    pub fn get(&self, site: &str, ip: &IpAddr) -> Option<&Asset> {
        self.sites.get(site)?.get(ip)
    }

    /// The criticality of the host behind `asset` (`ip` or `ip/unit`), the default when
    /// unknown.
    pub fn criticality(&self, site: &str, asset: &str) -> Criticality {
        asset_ip(asset)
            .and_then(|ip| self.get(site, &ip))
            .map(|a| a.criticality)
            .unwrap_or_default()
    }

    /// Applies an operator's change (criticality, description) to a tracked host; false
    /// when the host is unknown.
    pub fn annotate(
        &mut self,
        site: &str,
        ip: IpAddr,
        criticality: Option<Criticality>,
        description: Option<String>,
    ) -> Option<Asset> {
        let a = self.sites.get_mut(site)?.get_mut(&ip)?;
        if let Some(c) = criticality {
            a.criticality = c;
        }
        if description.is_some() {
            a.description = description;
        }
        self.changed.insert((site.to_owned(), ip));
        Some(a.clone())
    }

    /// Updates the inventory from one event; returns an alert when a device's
    /// identification changed.
    pub fn observe(&mut self, site: &str, event: &Event) -> Option<Alert> {
        match event {
            Event::Modbus(m) => {
                self.touch(site, m.src_ip, m.ts, |a| {
                    a.roles.insert(Role::ModbusClient);
                });
                self.touch(site, m.dst_ip, m.ts, |a| {
                    a.roles.insert(Role::ModbusServer);
                    if m.response.is_some() && m.exception_code.is_none() {
                        a.units.insert(m.unit);
                    }
                });
                self.identity(site, m)
            }
            Event::Flow(f) => {
                let ts = f.end_ts.max(f.ts);
                self.touch(site, f.src_ip, ts, |a| {
                    a.roles.insert(Role::Host);
                });
                self.touch(site, f.dst_ip, ts, |a| {
                    a.roles.insert(Role::Host);
                });
                None
            }
            Event::Syslog(s) => {
                let ip = s.src_ip?;
                self.touch(site, ip, s.ts, |a| {
                    a.roles.insert(Role::SyslogSender);
                    if let Some(h) = s.hostname.as_deref()
                        && a.hostnames.len() < 8
                        && !h.is_empty()
                    {
                        a.hostnames.insert(h.chars().take(255).collect());
                    }
                });
                None
            }
        }
    }

    /// Hosts new or changed since the last call (for the store).
    pub fn take_changed(&mut self) -> Vec<Asset> {
        std::mem::take(&mut self.changed)
            .into_iter()
            .filter_map(|(site, ip)| self.get(&site, &ip).cloned())
            .collect()
    }

    /// Hosts tracked, per site.
    pub fn counts(&self) -> BTreeMap<String, usize> {
        self.sites
            .iter()
            .map(|(s, hosts)| (s.clone(), hosts.len()))
            .collect()
    }

    fn touch(&mut self, site: &str, ip: IpAddr, ts: Timestamp, update: impl FnOnce(&mut Asset)) {
        let hosts = self.sites.entry(site.to_owned()).or_default();
        if !hosts.contains_key(&ip) && hosts.len() >= self.max_assets_per_site {
            self.untracked += 1;
            return;
        }
        let a = hosts.entry(ip).or_insert_with(|| Asset {
            site: site.to_owned(),
            ip,
            roles: BTreeSet::new(),
            units: BTreeSet::new(),
            identity: None,
            hostnames: BTreeSet::new(),
            first_seen: ts,
            last_seen: ts,
            criticality: Criticality::default(),
            description: None,
        });
        let before = (a.roles.len(), a.units.len(), a.hostnames.len());
        let seen = (a.first_seen, a.last_seen);
        a.first_seen = a.first_seen.min(ts);
        a.last_seen = a.last_seen.max(ts);
        update(a);
        // Last-seen moves with every event; storing it at most once per batch is enough,
        // and that is what `take_changed` does (the set holds each host once).
        if before != (a.roles.len(), a.units.len(), a.hostnames.len())
            || seen != (a.first_seen, a.last_seen)
        {
            self.changed.insert((site.to_owned(), ip));
        }
    }

    /// A device identification response (43/14) updates the server's identity; a field that
    /// was known and now differs is an alert.
    fn identity(&mut self, site: &str, m: &ModbusEvent) -> Option<Alert> {
        if m.func != 43 {
            return None;
        }
        let resp = m.response.as_ref()?;
        if resp.mei_type != Some(14) {
            return None;
        }
        let mut seen = DeviceIdentity::default();
        for o in resp.objects.as_deref().unwrap_or_default() {
            let value: String = o.value.chars().take(128).collect();
            match o.id {
                0 => seen.vendor = Some(value),
                1 => seen.product = Some(value),
                2 => seen.revision = Some(value),
                _ => {}
            }
        }
        if seen == DeviceIdentity::default() {
            return None;
        }
        let asset = self.sites.get_mut(site)?.get_mut(&m.dst_ip)?;
        let before = asset.identity.clone().unwrap_or_default();
        let mut after = before.clone();
        let mut differs = Vec::new();
        for (name, old, new, slot) in [
            ("vendor", &before.vendor, &seen.vendor, &mut after.vendor),
            (
                "product",
                &before.product,
                &seen.product,
                &mut after.product,
            ),
            (
                "revision",
                &before.revision,
                &seen.revision,
                &mut after.revision,
            ),
        ] {
            if let Some(new) = new {
                if old.as_ref().is_some_and(|o| o != new) {
                    differs.push(name);
                }
                *slot = Some(new.clone());
            }
        }
        if asset.identity.as_ref() == Some(&after) {
            return None;
        }
        asset.identity = Some(after.clone());
        self.changed.insert((site.to_owned(), m.dst_ip));
        if differs.is_empty() {
            return None;
        }
        let show = |i: &DeviceIdentity| {
            format!(
                "{} {} {}",
                i.vendor.as_deref().unwrap_or("?"),
                i.product.as_deref().unwrap_or("?"),
                i.revision.as_deref().unwrap_or("?")
            )
        };
        let device = format!("{}/{}", m.dst_ip, m.unit);
        let mut evidence = BTreeMap::new();
        evidence.insert("changed".to_owned(), serde_json::json!(differs));
        evidence.insert("before".to_owned(), serde_json::json!(before));
        evidence.insert("after".to_owned(), serde_json::json!(after));
        evidence.insert("asked_by".to_owned(), serde_json::json!(m.src_ip));
        Some(Alert {
            ts: m.ts,
            last_ts: m.ts,
            count: 1,
            detector: DetectorName::Inventory,
            kind: "device_identity_changed".to_owned(),
            severity: Severity::High,
            summary: format!(
                "Device {device} now identifies as {} (was {}): a firmware change or a replaced device; confirm it was planned.",
                show(&after),
                show(&before)
            ),
            src_ip: Some(m.src_ip),
            dst_ip: Some(m.dst_ip),
            asset: Some(device.clone()),
            subject: device,
            score: 0.8,
            evidence,
            attack: Vec::new(),
        }
        .with_attack())
    }
}

/// The address part of an asset name (`ip` or `ip/unit`).
pub fn asset_ip(asset: &str) -> Option<IpAddr> {
    asset.split('/').next()?.parse().ok()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    fn device_id(second: u32, revision: &str) -> Event {
        let ts = format!("2024-01-01T00:00:{second:02}.000000Z");
        serde_json::from_value(serde_json::json!({
            "type": "modbus", "ts": ts, "src_ip": "10.0.0.1", "src_port": 40000,
            "dst_ip": "10.0.0.2", "dst_port": 502, "tid": 1, "unit": 1,
            "func": 43, "func_name": "ENCAPSULATED_INTERFACE_TRANSPORT",
            "request": { "ts": ts, "len": 5, "mei_type": 14, "read_device_id_code": 1, "object_id": 0 },
            "response": { "ts": ts, "len": 30, "mei_type": 14, "read_device_id_code": 1,
                "objects": [
                    { "id": 0, "value": "Acme" },
                    { "id": 1, "value": "PLC-9" },
                    { "id": 2, "value": revision }
                ] },
            "exception": null, "exception_code": null, "latency_us": 500, "anomalies": []
        }))
        .unwrap()
    }

    #[test]
    fn roles_units_and_identity_are_learned_and_a_changed_revision_alerts() {
        let mut inv = Inventory::new(100);
        assert!(inv.observe("plant", &device_id(1, "1.0")).is_none());
        let plc = inv.get("plant", &"10.0.0.2".parse().unwrap()).unwrap();
        assert!(plc.roles.contains(&Role::ModbusServer));
        assert_eq!(plc.units, BTreeSet::from([1]));
        assert_eq!(
            plc.identity.as_ref().unwrap().revision.as_deref(),
            Some("1.0")
        );
        assert_eq!(inv.take_changed().len(), 2);
        // Same identity again: no alert, only last-seen moves.
        assert!(inv.observe("plant", &device_id(2, "1.0")).is_none());
        let a = inv.observe("plant", &device_id(3, "2.0-evil")).unwrap();
        assert_eq!(a.kind, "device_identity_changed");
        assert_eq!(a.severity, Severity::High);
        assert_eq!(a.evidence["changed"], serde_json::json!(["revision"]));
        assert!(a.summary.contains("2.0-evil") && a.summary.contains("1.0"));
    }

    #[test]
    fn a_full_site_counts_what_it_cannot_track() {
        let mut inv = Inventory::new(1);
        inv.observe("plant", &device_id(1, "1.0"));
        assert_eq!(inv.counts()["plant"], 1);
        assert_eq!(inv.untracked, 1);
    }
}
