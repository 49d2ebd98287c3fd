//! The Prometheus families of contract section 7, and nothing else but `process_*`.
//!
//! Series are bounded by design: labels are actions, reason codes, route patterns, methods,
//! statuses and trace depths, never a person or venue id. Store-wide gauges are refreshed from
//! `engine.stats()` at scrape time instead of being kept up to date on the ingest path.

use std::time::Duration;

use certs::InvalidReason;
use engine::{IngestOutcome, RejectReason, Stats};
use health::{CaseStatus, DoseOutcome, DoseReject, HealthStats, Tier};
use parking_lot::Mutex;
use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::routes::{ROUTES, UNMATCHED};

/// The server's metrics registry and handles.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    /// `checkin_scans_accepted_total{action="in"|"out"}`, resolved once: every scans request
    /// bumps them.
    accepted_in: IntCounter,
    accepted_out: IntCounter,
    scans_rejected: IntCounterVec,
    http_requests: IntCounterVec,
    http_duration: HistogramVec,
    visitors_present: IntGauge,
    venues: IntGauge,
    persons: IntGauge,
    scans_stored: IntGauge,
    log_bytes: IntGauge,
    log_sync: Histogram,
    trace_duration: HistogramVec,
    /// `checkin_vaccinations_accepted_total` and `checkin_vaccinations_rejected_total{reason}`.
    vaccinations_accepted: IntCounter,
    vaccinations_rejected: IntCounterVec,
    certificates_issued: IntCounter,
    cluster_stats_failures: IntCounter,
    replica_applied: IntGauge,
    cluster_continued_answers: IntCounter,
    /// What [`Metrics::set_continued_answers`] last counted up to.
    last_continued_answers: std::sync::Arc<Mutex<u64>>,
    replica_caught_up: IntGauge,
    replica_behind: IntGauge,
    replica_commands_deferred: IntCounter,
    /// `checkin_store_write_failed{store}`: `log` (scans, `audit.log`, `venues.log`) and
    /// `health` (the health database, the dose log), in that order.
    store_write_failed: [IntGauge; 2],
    /// `checkin_certificate_verifications_total{result}`: `valid`, then one per
    /// [`VERIFY_REASONS`] entry, in that order.
    certificate_verifications: Vec<IntCounter>,
    cases: IntGaugeVec,
    persons_by_tier: IntGaugeVec,
    rederivations: IntCounterVec,
    /// The health domain's counts at the last scrape, so its counters advance by the difference.
    last_rederived: std::sync::Arc<Mutex<(u64, u64)>>,
    standing_update: Histogram,
    portal_build: Histogram,
    status_reads: IntCounterVec,
    samples_registered: IntCounter,
    results_entered: IntCounterVec,
    declarations: IntCounter,
    passes_served: IntCounterVec,
}

/// A metric could not be registered (a programming error caught at start-up).
pub type MetricsError = prometheus::Error;

impl Metrics {
    /// Registers every family (and the process collector) in a fresh registry.
    pub fn new() -> Result<Metrics, MetricsError> {
        let registry = Registry::new();
        let scans_accepted = IntCounterVec::new(
            Opts::new(
                "checkin_scans_accepted_total",
                "Scans accepted (durable when counted), by action.",
            ),
            &["action"],
        )?;
        let scans_rejected = IntCounterVec::new(
            Opts::new(
                "checkin_scans_rejected_total",
                "Scans rejected, by reason code.",
            ),
            &["reason"],
        )?;
        let http_requests = IntCounterVec::new(
            Opts::new(
                "checkin_http_requests_total",
                "HTTP requests answered, by route pattern, method and status.",
            ),
            &["route", "method", "status"],
        )?;
        let http_duration = HistogramVec::new(
            HistogramOpts::new(
                "checkin_http_request_duration_seconds",
                "Time from request head to response head, by route pattern.",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                10.0,
            ]),
            &["route"],
        )?;
        let visitors_present = IntGauge::new(
            "checkin_visitors_present",
            "People present now, all venues together.",
        )?;
        let venues = IntGauge::new("checkin_venues", "Registered venues.")?;
        let persons = IntGauge::new("checkin_persons", "Distinct persons with a stored scan.")?;
        let scans_stored = IntGauge::new("checkin_scans_stored", "Accepted scans stored.")?;
        let log_bytes = IntGauge::new("checkin_log_bytes", "Bytes of log segments on disk.")?;
        let log_sync = Histogram::with_opts(
            HistogramOpts::new(
                "checkin_log_sync_duration_seconds",
                "Duration of one group commit (sync of appended scans).",
            )
            .buckets(vec![
                0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                0.25, 0.5, 1.0,
            ]),
        )?;
        let trace_duration = HistogramVec::new(
            HistogramOpts::new(
                "checkin_trace_duration_seconds",
                "Duration of contact traces, by depth.",
            )
            .buckets(vec![
                0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                1.0, 2.5, 5.0,
            ]),
            &["depth"],
        )?;
        let vaccinations_accepted = IntCounter::new(
            "checkin_vaccinations_accepted_total",
            "Dose records accepted (durable when counted; exact duplicates included).",
        )?;
        let vaccinations_rejected = IntCounterVec::new(
            Opts::new(
                "checkin_vaccinations_rejected_total",
                "Dose records rejected, by reason code.",
            ),
            &["reason"],
        )?;
        registry.register(Box::new(vaccinations_accepted.clone()))?;
        registry.register(Box::new(vaccinations_rejected.clone()))?;
        for reason in DoseReject::ALL {
            vaccinations_rejected.with_label_values(&[reason.code()]);
        }
        let cases = IntGaugeVec::new(
            Opts::new("checkin_cases", "Cases registered, by status."),
            &["status"],
        )?;
        let persons_by_tier = IntGaugeVec::new(
            Opts::new(
                "checkin_persons_by_tier",
                "Persons in each tier now (F0, F1, F2), from every counted case.",
            ),
            &["tier"],
        )?;
        let rederivations = IntCounterVec::new(
            Opts::new(
                "checkin_standing_trace_rederivations_total",
                "Standing traces re-derived, by cause: newly stored scans (late uploads included) \
                 that may change them, or a retention purge / venue change.",
            ),
            &["cause"],
        )?;
        let standing_update = Histogram::with_opts(
            HistogramOpts::new(
                "checkin_standing_trace_update_seconds",
                "From the first stored scan that may change standing traces until every re-derived \
                 trace is installed (tiers current).",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                10.0,
            ]),
        )?;
        let portal_build = Histogram::with_opts(
            HistogramOpts::new(
                "checkin_portal_build_seconds",
                "Builds of the public portal (gathering, rendering and compressing both \
                 languages), by duration.",
            )
            .buckets(vec![
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
            ]),
        )?;
        let status_reads = IntCounterVec::new(
            Opts::new(
                "checkin_status_reads_total",
                "Person status reads answered, by the tier answered.",
            ),
            &["tier"],
        )?;
        let samples_registered = IntCounter::new(
            "checkin_samples_registered_total",
            "Test samples registered (retries not counted).",
        )?;
        let results_entered = IntCounterVec::new(
            Opts::new(
                "checkin_results_entered_total",
                "Sample results entered or corrected, by result.",
            ),
            &["result"],
        )?;
        let declarations =
            IntCounter::new("checkin_declarations_total", "Health declarations stored.")?;
        let passes_served = IntCounterVec::new(
            Opts::new(
                "checkin_passes_served_total",
                "Health passes answered, by colour.",
            ),
            &["color"],
        )?;
        registry.register(Box::new(samples_registered.clone()))?;
        registry.register(Box::new(results_entered.clone()))?;
        registry.register(Box::new(declarations.clone()))?;
        registry.register(Box::new(passes_served.clone()))?;
        for result in health::LabResult::ALL {
            results_entered.with_label_values(&[result.as_str()]);
        }
        for color in health::PassColor::ALL {
            passes_served.with_label_values(&[color.as_str()]);
        }
        registry.register(Box::new(cases.clone()))?;
        registry.register(Box::new(persons_by_tier.clone()))?;
        registry.register(Box::new(rederivations.clone()))?;
        registry.register(Box::new(standing_update.clone()))?;
        registry.register(Box::new(portal_build.clone()))?;
        registry.register(Box::new(status_reads.clone()))?;
        for status in CaseStatus::ALL {
            cases.with_label_values(&[status.as_str()]);
        }
        for tier in ["F0", "F1", "F2"] {
            persons_by_tier.with_label_values(&[tier]);
        }
        for cause in ["scans", "store"] {
            rederivations.with_label_values(&[cause]);
        }
        for tier in Tier::ALL {
            status_reads.with_label_values(&[tier.as_str()]);
        }
        let cluster_stats_failures = IntCounter::new(
            "checkin_cluster_stats_failures_total",
            "Scrapes in cluster mode whose store gauges are this node's own because the shards \
             did not answer within 2 s.",
        )?;
        registry.register(Box::new(cluster_stats_failures.clone()))?;
        let store_write_failed_vec = IntGaugeVec::new(
            Opts::new(
                "checkin_store_write_failed",
                "1 while a store refuses every write until the server is restarted (after a \
                 failed write or sync): store=log (scans, audit.log, venues.log) or \
                 health (the health database, the dose log); /healthz answers 503 meanwhile.",
            ),
            &["store"],
        )?;
        registry.register(Box::new(store_write_failed_vec.clone()))?;
        let store_write_failed = [
            store_write_failed_vec.with_label_values(&["log"]),
            store_write_failed_vec.with_label_values(&["health"]),
        ];
        let cluster_continued_answers = IntCounter::new(
            "checkin_cluster_continued_answers_total",
            "Cluster mode: pages after the first of shard answers too large for one message (a \
             trace of a large cluster of cases, a top of many venues with someone present).",
        )?;
        registry.register(Box::new(cluster_continued_answers.clone()))?;
        let replica_commands_deferred = IntCounter::new(
            "checkin_cluster_replica_commands_deferred_total",
            "Cluster mode: health commands whose handler answered 503 on this node's replica (its \
             health database or store could not write, or it was shutting down): not applied \
             yet, the replica stops before them and applies them again.",
        )?;
        registry.register(Box::new(replica_commands_deferred.clone()))?;
        let replica_applied = IntGauge::new(
            "checkin_cluster_replica_applied",
            "Cluster mode: the stream sequence this node's replica (its health domain) has applied.",
        )?;
        registry.register(Box::new(replica_applied.clone()))?;
        let replica_caught_up = IntGauge::new(
            "checkin_cluster_replica_caught_up",
            "Cluster mode: 1 once this node's replica has caught up with the stream as it was at \
             start (the health domain's reads are served), else 0.",
        )?;
        registry.register(Box::new(replica_caught_up.clone()))?;
        let replica_behind = IntGauge::new(
            "checkin_cluster_replica_behind",
            "Cluster mode: stream messages this node's replica has not applied yet (the stream's \
             end as the replica last heard it, minus the applied sequence): how far this node's \
             health domain lags the cluster.",
        )?;
        registry.register(Box::new(replica_behind.clone()))?;
        let certificates_issued = IntCounter::new(
            "checkin_certificates_issued_total",
            "Health certificates signed (each GET /v1/persons/{id}/certificate that answered one, \
             JSON or QR).",
        )?;
        let verifications = IntCounterVec::new(
            Opts::new(
                "checkin_certificate_verifications_total",
                "Certificates verified by POST /v1/verify, by result: valid or the reason code.",
            ),
            &["result"],
        )?;
        registry.register(Box::new(certificates_issued.clone()))?;
        registry.register(Box::new(verifications.clone()))?;
        let certificate_verifications = std::iter::once("valid")
            .chain(VERIFY_REASONS.iter().map(|r| r.reason_code()))
            .map(|result| verifications.with_label_values(&[result]))
            .collect();
        registry.register(Box::new(scans_accepted.clone()))?;
        registry.register(Box::new(scans_rejected.clone()))?;
        registry.register(Box::new(http_requests.clone()))?;
        registry.register(Box::new(http_duration.clone()))?;
        registry.register(Box::new(visitors_present.clone()))?;
        registry.register(Box::new(venues.clone()))?;
        registry.register(Box::new(persons.clone()))?;
        registry.register(Box::new(scans_stored.clone()))?;
        registry.register(Box::new(log_bytes.clone()))?;
        registry.register(Box::new(log_sync.clone()))?;
        registry.register(Box::new(trace_duration.clone()))?;
        registry.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))?;

        // Pre-create the bounded series so dashboards see zeros, not gaps.
        for action in ["in", "out"] {
            scans_accepted.with_label_values(&[action]);
        }
        for reason in RejectReason::ALL {
            scans_rejected.with_label_values(&[reason.code()]);
        }
        for depth in ["1", "2"] {
            trace_duration.with_label_values(&[depth]);
        }
        for route in ROUTES {
            http_duration.with_label_values(&[route.pattern]);
        }
        http_duration.with_label_values(&[UNMATCHED]);

        Ok(Metrics {
            registry,
            accepted_in: scans_accepted.with_label_values(&["in"]),
            accepted_out: scans_accepted.with_label_values(&["out"]),
            scans_rejected,
            http_requests,
            http_duration,
            visitors_present,
            venues,
            persons,
            scans_stored,
            log_bytes,
            log_sync,
            trace_duration,
            vaccinations_accepted,
            vaccinations_rejected,
            certificates_issued,
            cluster_stats_failures,
            replica_applied,
            cluster_continued_answers,
            last_continued_answers: std::sync::Arc::default(),
            replica_commands_deferred,
            store_write_failed,
            replica_caught_up,
            replica_behind,
            certificate_verifications,
            cases,
            persons_by_tier,
            rederivations,
            last_rederived: std::sync::Arc::default(),
            standing_update,
            portal_build,
            status_reads,
            samples_registered,
            results_entered,
            declarations,
            passes_served,
        })
    }

    /// Counts one answered request. `route` is a pattern or [`UNMATCHED`].
    pub fn observe_request(&self, route: &str, method: &str, status: &str, elapsed: Duration) {
        self.http_requests
            .with_label_values(&[route, method_label(method), status])
            .inc();
        self.http_duration
            .with_label_values(&[route])
            .observe(elapsed.as_secs_f64());
    }

    /// Counts the accepted and rejected scans of one durable batch.
    pub fn record_outcome(&self, outcome: &IngestOutcome) {
        self.accepted_in.inc_by(u64::from(outcome.accepted_in));
        self.accepted_out.inc_by(u64::from(outcome.accepted_out));
        if outcome.rejected.is_empty() {
            return;
        }
        let mut counts = [0u64; RejectReason::ALL.len()];
        for r in &outcome.rejected {
            if let Some(i) = RejectReason::ALL.iter().position(|x| *x == r.reason) {
                counts[i] += 1;
            }
        }
        for (reason, n) in RejectReason::ALL.iter().zip(counts) {
            if n > 0 {
                self.scans_rejected
                    .with_label_values(&[reason.code()])
                    .inc_by(n);
            }
        }
    }

    /// Counts the accepted and rejected dose records of one durable request.
    pub fn record_doses(&self, outcome: &DoseOutcome) {
        self.vaccinations_accepted
            .inc_by(u64::from(outcome.accepted));
        let mut counts = [0u64; DoseReject::ALL.len()];
        for (_, reason) in &outcome.rejected {
            counts[*reason as usize] += 1;
        }
        for (reason, n) in DoseReject::ALL.iter().zip(counts) {
            if n > 0 {
                self.vaccinations_rejected
                    .with_label_values(&[reason.code()])
                    .inc_by(n);
            }
        }
    }

    /// Records one group commit.
    pub fn observe_sync(&self, elapsed: Duration) {
        self.log_sync.observe(elapsed.as_secs_f64());
    }

    /// Records one trace.
    pub fn observe_trace(&self, depth: u8, elapsed: Duration) {
        let label = if depth == 1 { "1" } else { "2" };
        self.trace_duration
            .with_label_values(&[label])
            .observe(elapsed.as_secs_f64());
    }

    /// One certificate signed.
    pub fn observe_certificate_issued(&self) {
        self.certificates_issued.inc();
    }

    /// One certificate verified: valid (`None`) or invalid for `reason`.
    pub fn observe_verification(&self, reason: Option<InvalidReason>) {
        let i = reason.map_or(0, |r| verify_reason_index(r) + 1);
        if let Some(counter) = self.certificate_verifications.get(i) {
            counter.inc();
        }
    }

    /// One standing-trace update pass.
    pub fn observe_standing(&self, elapsed: Duration) {
        self.standing_update.observe(elapsed.as_secs_f64());
    }

    /// Cluster mode: where this node's replica of the stream stands.
    pub fn set_replica(&self, applied: u64, caught_up: bool, behind: u64) {
        self.replica_applied
            .set(i64::try_from(applied).unwrap_or(i64::MAX));
        self.replica_caught_up.set(i64::from(caught_up));
        self.replica_behind
            .set(i64::try_from(behind).unwrap_or(i64::MAX));
    }

    /// Cluster mode: the node's count of continued shard answers so far
    /// ([`cluster::Node::continued_answers`]).
    pub fn set_continued_answers(&self, total: u64) {
        let mut last = self.last_continued_answers.lock();
        self.cluster_continued_answers
            .inc_by(total.saturating_sub(*last));
        *last = total.max(*last);
    }

    /// Whether the scan log's stores (`log`) and the health domain's (`health`) refuse every
    /// write until a restart.
    pub fn set_store_write_failed(&self, log: bool, health: bool) {
        self.store_write_failed[0].set(i64::from(log));
        self.store_write_failed[1].set(i64::from(health));
    }

    /// Cluster mode: a health command the replica must apply again (`cluster_replica`).
    pub fn note_replica_command_deferred(&self) {
        self.replica_commands_deferred.inc();
    }

    /// A scrape in cluster mode that could not get the shards' store counts.
    pub fn note_cluster_stats_failure(&self) {
        self.cluster_stats_failures.inc();
    }

    /// One build of the portal.
    pub fn observe_portal_build(&self, took: Duration) {
        self.portal_build.observe(took.as_secs_f64());
    }

    /// One sample registered.
    pub fn observe_sample(&self) {
        self.samples_registered.inc();
    }

    /// One result entered or corrected.
    pub fn observe_result(&self, result: &str) {
        self.results_entered.with_label_values(&[result]).inc();
    }

    /// One declaration stored.
    pub fn observe_declaration(&self) {
        self.declarations.inc();
    }

    /// One pass answered.
    pub fn observe_pass(&self, color: &str) {
        self.passes_served.with_label_values(&[color]).inc();
    }

    /// One person status answered.
    pub fn observe_status(&self, tier: Tier) {
        self.status_reads.with_label_values(&[tier.as_str()]).inc();
    }

    /// The text exposition, with the store gauges set from `stats` and the health families from
    /// `health`.
    pub fn render(&self, stats: &Stats, health: &HealthStats) -> Result<String, MetricsError> {
        for (status, n) in CaseStatus::ALL.iter().zip(health.cases) {
            self.cases
                .with_label_values(&[status.as_str()])
                .set(clamp_i64(n));
        }
        for (tier, n) in ["F0", "F1", "F2"].iter().zip(health.tiers) {
            self.persons_by_tier
                .with_label_values(&[tier])
                .set(clamp_i64(n));
        }
        {
            let mut last = self.last_rederived.lock();
            let (scans, store) = (health.rederived_by_scans, health.rederived_by_store);
            self.rederivations
                .with_label_values(&["scans"])
                .inc_by(scans.saturating_sub(last.0));
            self.rederivations
                .with_label_values(&["store"])
                .inc_by(store.saturating_sub(last.1));
            *last = (scans.max(last.0), store.max(last.1));
        }
        self.visitors_present.set(clamp_i64(stats.present));
        self.venues.set(clamp_i64(stats.venues));
        self.persons.set(clamp_i64(stats.persons));
        self.scans_stored.set(clamp_i64(stats.scans));
        self.log_bytes.set(clamp_i64(stats.log_bytes));
        let mut out = Vec::with_capacity(16 * 1024);
        TextEncoder::new().encode(&self.registry.gather(), &mut out)?;
        String::from_utf8(out).map_err(|e| prometheus::Error::Msg(e.to_string()))
    }
}

/// Every reason a certificate can fail verification, in the order of the `certs` crate.
pub(crate) const VERIFY_REASONS: [InvalidReason; 7] = [
    InvalidReason::BadPrefix,
    InvalidReason::BadBase45,
    InvalidReason::BadZlib,
    InvalidReason::BadCose,
    InvalidReason::UnknownKid,
    InvalidReason::BadSignature,
    InvalidReason::Expired,
];

/// `reason`'s place in [`VERIFY_REASONS`] (an exhaustive match: a new reason fails to compile
/// until it is listed).
fn verify_reason_index(reason: InvalidReason) -> usize {
    match reason {
        InvalidReason::BadPrefix => 0,
        InvalidReason::BadBase45 => 1,
        InvalidReason::BadZlib => 2,
        InvalidReason::BadCose => 3,
        InvalidReason::UnknownKid => 4,
        InvalidReason::BadSignature => 5,
        InvalidReason::Expired => 6,
    }
}

fn clamp_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// Methods as labels: the standard ones, everything else `other` (bounded series).
fn method_label(method: &str) -> &'static str {
    match method {
        "GET" => "GET",
        "POST" => "POST",
        "PUT" => "PUT",
        "DELETE" => "DELETE",
        "PATCH" => "PATCH",
        "HEAD" => "HEAD",
        "OPTIONS" => "OPTIONS",
        _ => "other",
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn certificate_families_have_every_result() {
        let m = Metrics::new().unwrap();
        m.observe_certificate_issued();
        m.observe_verification(None);
        m.observe_verification(Some(InvalidReason::Expired));
        m.observe_verification(Some(InvalidReason::Expired));
        let text = m
            .render(&Stats::default(), &HealthStats::default())
            .unwrap();
        assert!(text.contains("# TYPE checkin_certificates_issued_total counter"));
        assert!(
            text.contains("checkin_certificates_issued_total 1"),
            "{text}"
        );
        assert!(text.contains("# TYPE checkin_certificate_verifications_total counter"));
        assert!(text.contains("checkin_certificate_verifications_total{result=\"valid\"} 1"));
        assert!(text.contains("checkin_certificate_verifications_total{result=\"expired\"} 2"));
        for (i, reason) in VERIFY_REASONS.iter().enumerate() {
            assert_eq!(verify_reason_index(*reason), i);
            let series = format!(
                "checkin_certificate_verifications_total{{result=\"{}\"}}",
                reason.reason_code()
            );
            assert!(text.contains(&series), "missing {series}");
        }
    }

    #[test]
    fn exposition_has_every_contract_family() {
        let m = Metrics::new().unwrap();
        m.observe_request("/v1/scans", "POST", "200", Duration::from_millis(3));
        m.observe_request(UNMATCHED, "BREW", "404", Duration::from_millis(1));
        m.observe_sync(Duration::from_micros(300));
        m.observe_trace(2, Duration::from_millis(2));
        m.record_doses(&DoseOutcome {
            accepted: 4,
            rejected: vec![(1, DoseReject::Conflict), (2, DoseReject::Conflict)],
        });
        m.record_outcome(&IngestOutcome {
            accepted_in: 2,
            accepted_out: 1,
            duplicates: 0,
            rejected: vec![engine::Rejection {
                index: 1,
                reason: RejectReason::TooOld,
            }],
        });
        let text = m
            .render(
                &Stats {
                    scans: 3,
                    venues: 1,
                    persons: 2,
                    log_bytes: 4096,
                    present: 1,
                },
                &HealthStats {
                    cases: [2, 1, 0],
                    tiers: [2, 5, 7],
                    rederived_by_scans: 9,
                    rederived_by_store: 1,
                    windows: 3,
                },
            )
            .unwrap();
        for family in [
            "# TYPE checkin_scans_accepted_total counter",
            "# TYPE checkin_scans_rejected_total counter",
            "# TYPE checkin_http_requests_total counter",
            "# TYPE checkin_http_request_duration_seconds histogram",
            "# TYPE checkin_visitors_present gauge",
            "# TYPE checkin_venues gauge",
            "# TYPE checkin_persons gauge",
            "# TYPE checkin_scans_stored gauge",
            "# TYPE checkin_log_bytes gauge",
            "# TYPE checkin_log_sync_duration_seconds histogram",
            "# TYPE checkin_trace_duration_seconds histogram",
            "# TYPE checkin_vaccinations_accepted_total counter",
            "checkin_vaccinations_accepted_total 4",
            "# TYPE checkin_vaccinations_rejected_total counter",
            "checkin_vaccinations_rejected_total{reason=\"conflict\"} 2",
            "checkin_vaccinations_rejected_total{reason=\"invalid_row\"} 0",
            "checkin_scans_accepted_total{action=\"in\"} 2",
            "checkin_scans_rejected_total{reason=\"too_old\"} 1",
            "checkin_scans_rejected_total{reason=\"unknown_venue\"} 0",
            "checkin_http_requests_total{method=\"other\",route=\"unmatched\",status=\"404\"} 1",
            "checkin_log_bytes 4096",
            "checkin_visitors_present 1",
            "# TYPE checkin_cases gauge",
            "checkin_cases{status=\"active\"} 2",
            "checkin_cases{status=\"discarded\"} 0",
            "# TYPE checkin_persons_by_tier gauge",
            "checkin_persons_by_tier{tier=\"F1\"} 5",
            "# TYPE checkin_standing_trace_rederivations_total counter",
            "checkin_standing_trace_rederivations_total{cause=\"scans\"} 9",
            "# TYPE checkin_standing_trace_update_seconds histogram",
            "# TYPE checkin_status_reads_total counter",
        ] {
            assert!(text.contains(family), "missing {family}\n{text}");
        }
    }
}
