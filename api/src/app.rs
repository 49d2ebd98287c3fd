//! The application state shared by every connection, and the request pipeline around the
//! handlers: route lookup (404/405), authentication and role checks (401/403), dispatch, and the
//! per-request metrics. Handlers never see a request the table or the access rules refused.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::body::Req;
use engine::Engine;
use health::Health;
use hyper::header::AUTHORIZATION;
use hyper::{Request, Response};
use tokio::sync::watch;

use crate::access::{Access, Principal, Who};
use crate::body::BodyTimeouts;
use crate::certificates::{self, Certificates};
use crate::handlers;
use crate::metrics::{Metrics, MetricsError};
use crate::outbreak;
use crate::problem::{ApiError, Body};
use crate::records;
use crate::routes::{self, ClusterPath, Match, RouteId, RouteSpec, UNMATCHED};
use crate::sse::Hub;
use crate::tier_feed::TierHub;

/// Limits and timeouts of the HTTP server.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// Open connections at most; more are answered 503 and closed.
    pub max_connections: usize,
    /// Longest time to receive a request head, including the idle wait on a keep-alive
    /// connection before the next request.
    pub header_read_timeout: Duration,
    /// Longest wait for the next chunk of a request body.
    pub body_idle_timeout: Duration,
    /// Longest time to receive a whole request body.
    pub body_total_timeout: Duration,
    /// How long shutdown waits for in-flight requests before closing their connections.
    pub drain_timeout: Duration,
    /// Interval of SSE keep-alive comments.
    pub sse_keepalive: Duration,
    /// How long a built portal (`/`, both languages) is answered as it is before it is built
    /// again, at least (a build stays fresh for 5 times what it took if that is longer); zero
    /// builds it for every request (docs/web.md).
    pub portal_refresh: Duration,
    /// How old the portal may grow while nobody asks for it before it is built again in the
    /// background (or its freshness if longer), so that a request after an idle spell is
    /// answered at once from a build at most about this old (docs/web.md).
    pub portal_idle_rebuild: Duration,
    /// How often a single server looks whether a new day has begun, to purge expired samples and
    /// declarations then (not only at start). Cluster mode purges at the first command of a day.
    pub purge_check_every: Duration,
}

impl Default for ServerOptions {
    fn default() -> ServerOptions {
        ServerOptions {
            max_connections: 4096,
            header_read_timeout: Duration::from_secs(15),
            body_idle_timeout: Duration::from_secs(15),
            body_total_timeout: Duration::from_secs(120),
            drain_timeout: Duration::from_secs(30),
            sse_keepalive: Duration::from_secs(15),
            portal_refresh: Duration::from_secs(1),
            portal_idle_rebuild: crate::web::portal::IDLE_REBUILD,
            purge_check_every: Duration::from_secs(600),
        }
    }
}

/// The server's shared state. Cheap to clone.
#[derive(Clone)]
pub struct App {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) engine: Engine,
    /// Cluster mode's connection (`App::with_cluster`); unset in single-node mode.
    pub(crate) cluster: std::sync::OnceLock<crate::cluster_mode::Node>,
    /// Cluster mode: this node's replica of the stream (the health domain).
    pub(crate) replica: std::sync::OnceLock<Arc<crate::cluster_replica::Replica>>,
    /// Cluster mode: scan requests this node is validating and publishing right now (its
    /// replica yields to them).
    pub(crate) scans_in_flight: std::sync::atomic::AtomicUsize,
    pub(crate) health: Health,
    pub(crate) tiers: Arc<TierHub>,
    pub(crate) access: Access,
    pub(crate) metrics: Metrics,
    pub(crate) hub: Arc<Hub>,
    /// The portal's pages, built at most once per `options.portal_refresh`.
    pub(crate) portal: crate::web::portal::PortalCache,
    pub(crate) options: ServerOptions,
    /// The certificate signing key and settings (`App::with_certificates`).
    pub(crate) certificates: std::sync::OnceLock<Certificates>,
    pub(crate) shutdown: watch::Sender<bool>,
    /// Why the server must stop by itself ([`App::stop_for`]); `None` while it need not.
    pub(crate) stop_reason: watch::Sender<Option<String>>,
}

impl App {
    /// Builds the state and hooks the engine's live feed and sync timings, and the health
    /// domain's tier changes and update timings, into it. Call it once per engine (each call adds
    /// listeners). `health` must be open over `engine`.
    pub fn new(
        engine: Engine,
        health: Health,
        access: Access,
        options: ServerOptions,
    ) -> Result<App, MetricsError> {
        let metrics = Metrics::new()?;
        let tiers = Arc::new(TierHub::default());
        {
            let tiers = Arc::clone(&tiers);
            health.on_tier_change(Box::new(move |status| tiers.publish(status)));
        }
        {
            let metrics = metrics.clone();
            health.on_update(Box::new(move |elapsed| metrics.observe_standing(elapsed)));
        }
        let hub = Arc::new(Hub::default());
        {
            let hub = Arc::clone(&hub);
            engine.subscribe(Box::new(move |events| hub.publish(events)));
        }
        {
            let hub = Arc::clone(&hub);
            engine.on_exit(Box::new(move |exits| hub.publish_exits(exits)));
        }
        {
            let metrics = metrics.clone();
            engine.on_sync(Box::new(move |elapsed| metrics.observe_sync(elapsed)));
        }
        let (shutdown, _) = watch::channel(false);
        let (stop_reason, _) = watch::channel(None);
        Ok(App {
            inner: Arc::new(Inner {
                engine,
                cluster: std::sync::OnceLock::new(),
                replica: std::sync::OnceLock::new(),
                scans_in_flight: std::sync::atomic::AtomicUsize::new(0),
                health,
                tiers,
                access,
                metrics,
                hub,
                portal: crate::web::portal::PortalCache::new(
                    options.portal_refresh,
                    options.portal_idle_rebuild,
                ),
                options,
                shutdown,
                stop_reason,
                certificates: std::sync::OnceLock::new(),
            }),
        })
    }

    /// The store.
    pub fn engine(&self) -> &Engine {
        &self.inner.engine
    }

    /// Cluster mode (docs/cluster.md): scans, visits, occupancy and traces go through `node`;
    /// the node's engine and health domain follow the whole stream (`cluster_replica`), and
    /// `clock` must be the health domain's clock ([`health::HealthConfig::clock`]), which the
    /// follower pins while it applies a command. `None` keeps single-node mode.
    pub fn with_cluster(self, cluster: Option<crate::cluster_replica::ClusterSetup>) -> App {
        if let Some(crate::cluster_replica::ClusterSetup {
            node,
            clock,
            resumed_at,
            snapshots,
            stall_exit,
        }) = cluster
        {
            let replica = Arc::new(
                crate::cluster_replica::Replica::new(clock, resumed_at).with_stall_exit(stall_exit),
            );
            node.note_replica_applied(resumed_at);
            crate::cluster_mode::forward_audit(&node, &self.inner.engine);
            let _ = self.inner.replica.set(Arc::clone(&replica));
            let _ = self.inner.cluster.set(node.clone());
            crate::cluster_replica::follow(&self, &node, replica, snapshots);
        }
        self
    }

    /// The cluster connection, in cluster mode.
    pub(crate) fn cluster(&self) -> Option<&crate::cluster_mode::Node> {
        self.inner.cluster.get()
    }

    /// The health domain (cases, tiers).
    pub fn health(&self) -> &Health {
        &self.inner.health
    }

    /// The limits and timeouts.
    pub fn options(&self) -> &ServerOptions {
        &self.inner.options
    }

    /// True without a tokens file.
    pub fn is_open(&self) -> bool {
        self.inner.access.is_open()
    }

    /// Asks the server to stop by itself (a failure only a restart mends): [`App::stopped`]
    /// completes, and the binary exits with status 1 once it has shut down.
    pub(crate) fn stop_for(&self, why: String) {
        tracing::error!(%why, "the server stops: restart it");
        self.inner.stop_reason.send_if_modified(|r| {
            if r.is_none() {
                *r = Some(why);
                true
            } else {
                false
            }
        });
    }

    /// Completes with the reason once [`App::stop_for`] was called (never otherwise).
    pub async fn stopped(&self) -> String {
        let mut rx = self.inner.stop_reason.subscribe();
        loop {
            if let Some(why) = rx.borrow_and_update().clone() {
                return why;
            }
            if rx.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }

    /// Why the server stopped by itself, if it did ([`App::stop_for`]).
    pub fn stop_reason(&self) -> Option<String> {
        self.inner.stop_reason.borrow().clone()
    }

    /// Whether shutdown has begun ([`App::end_feeds`]).
    pub(crate) fn is_shutting_down(&self) -> bool {
        *self.inner.shutdown.borrow()
    }

    /// Ends every live feed (at shutdown, so their connections can close).
    pub(crate) fn end_feeds(&self) {
        self.inner.shutdown.send_replace(true);
    }

    pub(crate) fn body_timeouts(&self) -> BodyTimeouts {
        BodyTimeouts {
            idle: self.inner.options.body_idle_timeout,
            total: self.inner.options.body_total_timeout,
        }
    }

    /// Answers one request. Never fails: every error is a problem+json response.
    pub async fn handle(
        &self,
        req: Request<hyper::body::Incoming>,
    ) -> Result<Response<Body>, Infallible> {
        let req = req.map(http_body_util::Either::Left);
        let started = Instant::now();
        let method = req.method().clone();
        // The web pages (contract section 13) come before the JSON table; anything else,
        // unknown paths included, goes on to it (404 and 405 stay problem+json).
        if let Some(page) = crate::web::find(method.as_str(), req.uri().path()) {
            let resp = crate::web::serve(self, page.clone(), &req).await;
            self.inner.metrics.observe_request(
                page.label(),
                method.as_str(),
                resp.status().as_str(),
                started.elapsed(),
            );
            return Ok(resp);
        }
        let (route, resp) = match routes::find(method.as_str(), req.uri().path()) {
            Match::NotFound => (
                UNMATCHED,
                ApiError::NotFound(format!("no route for {}", req.uri().path())).into_response(),
            ),
            Match::WrongMethod(pattern, allow) => (
                pattern,
                ApiError::MethodNotAllowed { allow }.into_response(),
            ),
            Match::Found(spec, param) => (
                spec.pattern,
                self.route(spec, param, req)
                    .await
                    .unwrap_or_else(ApiError::into_response),
            ),
        };
        self.inner.metrics.observe_request(
            route,
            method.as_str(),
            resp.status().as_str(),
            started.elapsed(),
        );
        Ok(resp)
    }

    async fn route(
        &self,
        spec: &'static RouteSpec,
        param: Option<String>,
        req: Req,
    ) -> Result<Response<Body>, ApiError> {
        let principal = match spec.who {
            Who::Anyone => Arc::new(Principal::open()),
            who => {
                let auth = req.headers().get(AUTHORIZATION).map(|v| v.as_bytes());
                let principal = self.inner.access.authenticate(auth)?;
                who.check(&principal, param.as_deref())?;
                principal
            }
        };
        if let (Some(node), Some(replica)) = (self.cluster(), self.inner.replica.get()) {
            match spec.id.cluster_path() {
                ClusterPath::Node => {}
                // Readiness is the replica's catch-up alone: a probe does not wait for changes.
                ClusterPath::HealthRead if spec.id == RouteId::Readyz => {
                    crate::cluster_replica::ready(replica)?
                }
                ClusterPath::HealthRead => {
                    crate::cluster_replica::ready_to_read(replica, node.health_seq_to_read())
                        .await?
                }
                ClusterPath::HealthWrite => {
                    return crate::cluster_replica::write(
                        self, node, replica, spec, &principal, req,
                    )
                    .await
                }
            }
        } else if spec.id.cluster_path() == ClusterPath::HealthWrite {
            // A change runs to its end in a task of its own: a client that goes away (hyper
            // then drops this future) must not leave a change made and its audit entry unwritten.
            let app = self.clone();
            return tokio::spawn(
                async move { app.dispatch(spec, param, principal, req, true).await },
            )
            .await
            .unwrap_or_else(|e| Err(ApiError::Internal(format!("a change's task failed: {e}"))));
        }
        self.dispatch(spec, param, principal, req, true).await
    }

    /// Runs the handler of `spec` for an authorized request. `taken_here`: see
    /// [`handlers::Ctx::taken_here`].
    pub(crate) async fn dispatch(
        &self,
        spec: &'static RouteSpec,
        param: Option<String>,
        principal: Arc<Principal>,
        req: Req,
        taken_here: bool,
    ) -> Result<Response<Body>, ApiError> {
        let query = routes::parse_query(req.uri().query());
        let ctx = handlers::Ctx {
            spec,
            param: param.unwrap_or_default(),
            principal,
            query,
            taken_here,
        };
        match spec.id {
            RouteId::Healthz => handlers::healthz(self),
            RouteId::Readyz => handlers::readyz(self),
            RouteId::Metrics => handlers::metrics(self).await,
            RouteId::RegisterVenues => handlers::register_venues(self, req).await,
            RouteId::Venue => handlers::venue(self, &ctx).await,
            RouteId::VenueOccupancy => handlers::venue_occupancy(self, &ctx).await,
            RouteId::VenueEvents => handlers::venue_events(self, &ctx, &req),
            RouteId::TopOccupancy => handlers::top_occupancy(self, &ctx).await,
            RouteId::Scans => handlers::scans(self, req).await,
            RouteId::RecordVaccinations => crate::vaccinations::record(self, &ctx, req).await,
            RouteId::PersonVisits => handlers::person_visits(self, &ctx).await,
            RouteId::PersonVaccinations => crate::vaccinations::person_doses(self, &ctx).await,
            RouteId::Trace => handlers::trace(self, &ctx, req).await,
            RouteId::Stats => handlers::stats(self).await,
            RouteId::Audit => handlers::audit(self, &ctx).await,
            RouteId::Keys => certificates::keys(self),
            RouteId::PersonCertificate => certificates::certificate(self, &ctx).await,
            RouteId::Verify => certificates::verify(self, req).await,
            RouteId::RegisterCase => outbreak::register_case(self, &ctx, req).await,
            RouteId::ListCases => outbreak::list_cases(self, &ctx).await,
            RouteId::Case => outbreak::get_case(self, &ctx),
            RouteId::PatchCase => outbreak::patch_case(self, &ctx, req).await,
            RouteId::CaseContacts => outbreak::case_contacts(self, &ctx).await,
            RouteId::PersonStatus => outbreak::person_status(self, &ctx).await,
            RouteId::TierEvents => outbreak::tier_events(self),
            RouteId::ExposureSites => outbreak::exposure_sites(self, &ctx).await,
            RouteId::RegisterSample => records::register_sample(self, &ctx, req).await,
            RouteId::Sample => records::get_sample(self, &ctx).await,
            RouteId::SampleResult => records::enter_result(self, &ctx, req).await,
            RouteId::PersonResults => records::person_results(self, &ctx).await,
            RouteId::Declarations => records::declare(self, &ctx, req).await,
            RouteId::Followups => records::followups(self).await,
            RouteId::PersonPass => records::pass(self, &ctx).await,
            RouteId::RegisterAreas => records::register_areas(self, req).await,
            RouteId::Areas => records::areas(self).await,
            RouteId::Summary => records::summary(self).await,
            RouteId::PublishNotice => records::publish_notice(self, &ctx, req).await,
            RouteId::Notices => records::notices(self).await,
        }
    }
}
