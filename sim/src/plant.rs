//! The plant as a whole: its configuration, the start of every device and host, scenario runs
//! and an orderly shutdown (every connection closed with a FIN, the sink flushed), with a
//! broadcast of the shutdown to every task as in mini-redis.

use std::time::Duration;

use serde::Deserialize;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::client::ModbusClient;
use crate::error::SimError;
use crate::hmi::{
    HmiCommand, OperatorSetpoint, Poll, PollChannel, default_channels, default_operator_setpoints,
    run_hmi, run_inventory, run_operator,
};
use crate::hosts;
use crate::plc::{PlcHandle, PlcSpec, default_plcs, start_plc};
use crate::rng::Rng;
use crate::scenario::{self, ScenarioRecord, ScenarioSpec};
use crate::sink::FrameSink;
use crate::syslog;
use crate::tap::{Tap, TapStats};

/// Commands queued per HMI connection.
const HMI_QUEUE: usize = 16;
/// How long a shutdown waits for connections to close.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// Everything about the plant. Durations are plant time; [`PlantConfig::speed`] turns them
/// into real time.
#[derive(Clone, Debug)]
pub struct PlantConfig {
    /// Seeds the processes, the operator and the TCP initial sequence numbers.
    pub seed: u64,
    /// Plant seconds per real second (1 = real time; 5 = every cycle five times shorter).
    pub speed: f64,
    pub plcs: Vec<PlcSpec>,
    pub channels: Vec<PollChannel>,
    pub operator_setpoints: Vec<OperatorSetpoint>,
    /// The operator's writes come this far apart (uniformly between the two).
    pub operator_gap: (Duration, Duration),
    /// The engineering workstation reads device identities this often.
    pub identity_period: Duration,
    /// One background syslog message this often.
    pub syslog_period: Duration,
    /// A Modbus request without a response after this is given up.
    pub request_timeout: Duration,
    /// After a failed poll the HMI waits this long before reconnecting.
    pub reconnect_delay: Duration,
    /// The process model's step.
    pub tick: Duration,
}

impl Default for PlantConfig {
    fn default() -> Self {
        PlantConfig {
            seed: 1,
            speed: 1.0,
            plcs: default_plcs(),
            channels: default_channels(),
            operator_setpoints: default_operator_setpoints(),
            operator_gap: (Duration::from_secs(20), Duration::from_secs(60)),
            identity_period: Duration::from_secs(60),
            syslog_period: Duration::from_secs(5),
            request_timeout: Duration::from_secs(1),
            reconnect_delay: Duration::from_secs(2),
            tick: Duration::from_millis(100),
        }
    }
}

impl PlantConfig {
    /// Every problem at once.
    pub fn validate(&self) -> Result<(), SimError> {
        let mut problems = Vec::new();
        if !(self.speed.is_finite() && self.speed > 0.0) {
            problems.push(format!(
                "speed must be a positive number, not {}",
                self.speed
            ));
        }
        if self.plcs.len() < 3 {
            problems.push(
                "the scenarios need the three devices (tank, feeder, pump station)".to_owned(),
            );
        }
        for (i, ch) in self.channels.iter().enumerate() {
            if ch.plc >= self.plcs.len() {
                problems.push(format!("channel {i}: no device {}", ch.plc));
            }
            if ch.period.is_zero() {
                problems.push(format!("channel {i}: a period of zero"));
            }
            if ch.quantity == 0 || ch.quantity > 125 {
                problems.push(format!(
                    "channel {i}: quantity {} outside 1-125",
                    ch.quantity
                ));
            }
        }
        for (i, sp) in self.operator_setpoints.iter().enumerate() {
            if sp.plc >= self.plcs.len() || sp.min > sp.max {
                problems.push(format!("operator set-point {i}: bad device or range"));
            }
        }
        if self.operator_gap.0 > self.operator_gap.1 {
            problems.push("operator_gap: minimum above maximum".to_owned());
        }
        for (name, d) in [
            ("identity_period", self.identity_period),
            ("syslog_period", self.syslog_period),
            ("request_timeout", self.request_timeout),
            ("tick", self.tick),
        ] {
            if d.is_zero() {
                problems.push(format!("{name} must not be zero"));
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(SimError::Config(problems.join("; ")))
        }
    }

    /// Plant time to real time.
    pub fn real(&self, plant: Duration) -> Duration {
        plant.div_f64(self.speed)
    }
}

/// Options of a run from the command line or a test: learning time, then scenarios.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunOptions {
    /// Normal traffic before the first scenario, plant seconds.
    pub learn_s: f64,
    /// Normal traffic between two scenarios (and after the last), plant seconds.
    pub gap_s: f64,
    /// Scenario names in the order to run them.
    pub scenarios: Vec<String>,
    /// Overrides every scenario's default duration, plant seconds.
    pub duration_s: Option<f64>,
}

/// The running plant.
#[derive(Debug)]
pub struct Plant {
    config: PlantConfig,
    tap: std::sync::Arc<Tap>,
    plcs: Vec<PlcHandle>,
    hmi: Vec<mpsc::Sender<HmiCommand>>,
    shutdown: watch::Sender<bool>,
    /// Hosts that close their connections on shutdown.
    hosts: Vec<JoinHandle<()>>,
    /// Servers and process ticks, aborted on shutdown.
    devices: Vec<JoinHandle<()>>,
}

impl Plant {
    /// Starts the devices, the HMI, the operator, the engineering workstation and the syslog
    /// hosts; every frame goes to `sink`.
    pub async fn start(config: PlantConfig, sink: Box<dyn FrameSink>) -> Result<Plant, SimError> {
        config.validate()?;
        let root = Rng::new(config.seed);
        let tap = Tap::new(sink, config.seed);
        let tick = config.real(config.tick);
        let tick_s = config.tick.as_secs_f64();
        let mut plcs = Vec::new();
        let mut devices = Vec::new();
        for (i, spec) in config.plcs.iter().enumerate() {
            let (handle, tasks) =
                start_plc(spec.clone(), root.fork(100 + i as u64), tick, tick_s).await?;
            plcs.push(handle);
            devices.extend(tasks);
        }
        let (shutdown, watch_rx) = watch::channel(false);
        let timeout = config.real(config.request_timeout);
        let mut hmi = Vec::new();
        let mut hosts_tasks = Vec::new();
        for (i, plc) in plcs.iter().enumerate() {
            let polls: Vec<Poll> = config
                .channels
                .iter()
                .filter(|c| c.plc == i)
                .map(|c| Poll {
                    table: c.table,
                    address: c.address,
                    quantity: c.quantity,
                    period: config.real(c.period),
                })
                .collect();
            let (tx, rx) = mpsc::channel(HMI_QUEUE);
            hmi.push(tx);
            let client = ModbusClient::new(
                std::sync::Arc::clone(&tap),
                hosts::HMI,
                plc.clone(),
                timeout,
            );
            hosts_tasks.push(tokio::spawn(run_hmi(
                client,
                polls,
                config.real(config.reconnect_delay),
                rx,
                watch_rx.clone(),
            )));
        }
        hosts_tasks.push(tokio::spawn(run_operator(
            hmi.clone(),
            config.operator_setpoints.clone(),
            (
                config.real(config.operator_gap.0),
                config.real(config.operator_gap.1),
            ),
            root.fork(200),
            watch_rx.clone(),
        )));
        hosts_tasks.push(tokio::spawn(run_inventory(
            std::sync::Arc::clone(&tap),
            hosts::ENG_WS,
            plcs.clone(),
            config.real(config.identity_period),
            timeout,
            watch_rx.clone(),
        )));
        hosts_tasks.push(tokio::spawn(syslog::run_background(
            std::sync::Arc::clone(&tap),
            config.real(config.syslog_period),
            root.fork(300),
            watch_rx,
        )));
        Ok(Plant {
            config,
            tap,
            plcs,
            hmi,
            shutdown,
            hosts: hosts_tasks,
            devices,
        })
    }

    pub fn config(&self) -> &PlantConfig {
        &self.config
    }

    pub fn tap(&self) -> &std::sync::Arc<Tap> {
        &self.tap
    }

    /// The devices, in configuration order (tank, feeder, pump station by default).
    pub fn plcs(&self) -> &[PlcHandle] {
        &self.plcs
    }

    /// The HMI's command queue per device (same order as [`Self::plcs`]).
    pub fn hmi(&self) -> &[mpsc::Sender<HmiCommand>] {
        &self.hmi
    }

    /// The request timeout in real time.
    pub fn request_timeout(&self) -> Duration {
        self.config.real(self.config.request_timeout)
    }

    pub(crate) fn scenario_rng(&self, name: &str) -> Rng {
        let label = name.bytes().fold(0xCBF2_9CE4_8422_2325u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01B3)
        });
        Rng::new(self.config.seed).fork(label)
    }

    /// Lets normal traffic run for `plant` time.
    pub async fn idle(&self, plant: Duration) {
        tokio::time::sleep(self.config.real(plant)).await;
    }

    /// Runs the scenario called `name` for `duration` plant time (its default when `None`)
    /// and returns what ran and when. The run is bounded: it is cut after its duration plus
    /// two request timeouts.
    pub async fn run_scenario(
        &self,
        name: &str,
        duration: Option<Duration>,
    ) -> Result<ScenarioRecord, SimError> {
        let spec: &ScenarioSpec =
            scenario::find(name).ok_or_else(|| SimError::UnknownScenario(name.to_owned()))?;
        let plant_duration =
            duration.unwrap_or_else(|| Duration::from_secs(spec.default_duration_s));
        let real = self.config.real(plant_duration);
        let bound = real + 2 * self.request_timeout() + Duration::from_millis(100);
        let start = self.tap.now();
        let outcome = tokio::time::timeout(bound, scenario::run(self, spec, real)).await;
        let end = self.tap.now();
        let (sources, targets) = match outcome {
            Ok(r) => r?,
            Err(_) => {
                tracing::warn!(scenario = spec.name, "scenario cut at its bound");
                (Vec::new(), Vec::new())
            }
        };
        Ok(ScenarioRecord {
            name: spec.name.to_owned(),
            class: spec.class,
            technique: spec.technique.to_owned(),
            start,
            end,
            expected: spec.expected.iter().map(|s| (*s).to_owned()).collect(),
            sources,
            targets,
        })
    }

    /// Learning time, then each scenario followed by a gap of normal traffic. `on_event` hears
    /// each scenario start (its name) and end (its record).
    pub async fn run(
        &self,
        options: &RunOptions,
        mut on_event: impl FnMut(RunEvent<'_>),
    ) -> Result<Vec<ScenarioRecord>, SimError> {
        for name in &options.scenarios {
            if scenario::find(name).is_none() {
                return Err(SimError::UnknownScenario(name.clone()));
            }
        }
        let secs = |s: f64| Duration::try_from_secs_f64(s.max(0.0)).unwrap_or_default();
        self.idle(secs(options.learn_s)).await;
        let mut records = Vec::new();
        for name in &options.scenarios {
            on_event(RunEvent::Started(name));
            let record = self
                .run_scenario(name, options.duration_s.map(secs))
                .await?;
            on_event(RunEvent::Ended(&record));
            records.push(record);
            self.idle(secs(options.gap_s)).await;
        }
        Ok(records)
    }

    /// Stops every host (their connections close with FIN), then the devices, and flushes the
    /// sink.
    pub async fn shutdown(self) -> Result<TapStats, SimError> {
        let _ = self.shutdown.send(true);
        drop(self.hmi);
        let grace = self.config.real(self.config.request_timeout) + SHUTDOWN_GRACE;
        for task in self.hosts {
            let abort = task.abort_handle();
            if tokio::time::timeout(grace, task).await.is_err() {
                abort.abort();
            }
        }
        let stats = self.tap.finish(SHUTDOWN_GRACE).await;
        for task in self.devices {
            task.abort();
        }
        stats
    }
}

/// Progress of [`Plant::run`].
#[derive(Debug)]
pub enum RunEvent<'a> {
    Started(&'a str),
    Ended(&'a ScenarioRecord),
}
