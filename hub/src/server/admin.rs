//! The Admin API: what `flotilla` (the CLI) calls. Every call requires an admin
//! certificate.

use std::sync::Arc;

use flotilla_identity::Role;
use flotilla_model::{ClusterName, LabelSelector, State, Summary};
use flotilla_proto::v1 as pb;
use flotilla_proto::v1::admin_server::Admin;
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status};

use crate::charts;
use crate::commands::{self, NewToken, SourceSecrets};
use crate::credentials::Kind;
use crate::fleet::Fleet;
use crate::label_trust;
use crate::queries::ClusterOverview;
use crate::records::{HelmAuthSpec, SourceSpec, now_unix, rfc3339};
use crate::server::peer;
use crate::targeting::{GroupSpec, TargetSpec};

pub struct AdminService {
    fleet: Arc<Fleet>,
}

impl AdminService {
    pub fn new(fleet: Arc<Fleet>) -> Self {
        AdminService { fleet }
    }

    pub(crate) fn cluster_view(&self, name: &ClusterName) -> Option<pb::Cluster> {
        let ClusterOverview {
            record: rec,
            connected,
            state,
            summary,
        } = self.fleet.cluster_overview(name)?;
        Some(pb::Cluster {
            name: name.to_string(),
            labels: rec.labels(),
            connected,
            state: state.to_string(),
            bundles: count(summary.total()),
            bundles_ready: count(summary.ready()),
            agent_version: rec.agent_version.clone(),
            last_seen: rfc3339(rec.last_seen),
            registered: rfc3339(rec.registered_at),
            revoked: rec.revoked,
            cert_expires: rfc3339(rec.cert_expires),
            pending_labels: label_trust::pending(&rec),
            reported_labels: rec.reported_labels,
            accepted_labels: rec.accepted_labels,
            token_labels: rec.token_labels,
            hub_labels: rec.hub_labels,
            removed_labels: rec.removed_labels.into_iter().collect(),
            kube_version: rec.capabilities.map(|c| c.kube_version).unwrap_or_default(),
        })
    }

    fn found_cluster(&self, name: &ClusterName) -> Result<pb::Cluster, Status> {
        self.cluster_view(name)
            .ok_or_else(|| Status::not_found(format!("cluster {name} not found")))
    }

    fn source_view(&self, s: &crate::fleet::SourceState) -> pb::Source {
        let rt = s.runtime.read();
        let (commit, error, error_since, last_poll, bundles, signed) = match &rt {
            Ok(rt) => (
                rt.commit.clone().unwrap_or_default(),
                rt.error.clone().unwrap_or_default(),
                if rt.error.is_some() {
                    rfc3339(rt.error_since)
                } else {
                    String::new()
                },
                rfc3339(rt.last_poll),
                rt.bundles.as_ref().map_or(0, Vec::len),
                rt.signed_by.is_some(),
            ),
            Err(_) => Default::default(),
        };
        let verified_commit = if signed {
            commit.clone()
        } else {
            String::new()
        };
        pb::Source {
            name: s.spec.name.clone(),
            // The URL may carry a password or token; nobody reads it back.
            repo: flotilla_model::redact_url(&s.spec.repo),
            branch: s.spec.branch.clone(),
            paths: s.spec.paths.clone(),
            interval_seconds: s.spec.interval_secs,
            targets: s.spec.targets.iter().map(target_to_pb).collect(),
            commit,
            error,
            error_since,
            last_poll,
            bundles: count(bundles),
            revision: s.spec.revision.clone().unwrap_or_default(),
            polling_disabled: s.spec.interval_secs == 0,
            paused: s.spec.paused,
            // Only the user name; secret parts never leave the hub.
            auth: s.spec.username.as_ref().map(|u| pb::SourceAuth {
                username: u.clone(),
                ..Default::default()
            }),
            credentials: s.credential_names.clone(),
            verify_commits: s.spec.verify_commits,
            verified_commit,
            // Never the secrets: only which ones the hub holds.
            helm_auth: s.spec.helm_auth.as_ref().map(|h| pb::HelmRepoAuth {
                username: h.username.clone(),
                url_regex: h.url_regex.clone(),
                plain_http: h.plain_http,
                stored: charts::auth::stored(&self.fleet.data_dir, &s.spec.name),
                ..Default::default()
            }),
        }
    }

    pub(crate) fn rollout_view(&self, bundle: &str) -> Result<pb::Rollout, Status> {
        let plan = self.fleet.plan_rollout(bundle).ok_or_else(|| {
            Status::not_found(format!(
                "bundle {bundle} not found (or it has no good revision)"
            ))
        })?;
        Ok(pb::Rollout {
            bundle: bundle.to_string(),
            phase: plan.report.phase.to_string(),
            message: plan.report.message.clone(),
            partitions: plan
                .report
                .partitions
                .iter()
                .map(|p| pb::RolloutPartition {
                    name: p.name.clone(),
                    clusters: count(p.clusters),
                    done: count(p.done),
                    updating: count(p.updating),
                    waiting: count(p.waiting),
                    max_unavailable: count(p.max_unavailable),
                })
                .collect(),
            paused: self.fleet.paused_rollouts.contains_key(bundle),
        })
    }

    /// Every cluster as `ListClusters` shows it, by name. Shared with the dashboard.
    pub(crate) fn clusters(&self) -> Vec<pb::Cluster> {
        self.fleet
            .sorted_clusters()
            .iter()
            .filter_map(|c| self.cluster_view(c))
            .collect()
    }

    /// Every source as `ListSources` shows it, by name. Shared with the dashboard.
    pub(crate) fn sources(&self) -> Vec<pb::Source> {
        let mut sources: Vec<pb::Source> = self
            .fleet
            .sources
            .iter()
            .map(|s| self.source_view(s.value()))
            .collect();
        sources.sort_by(|a, b| a.name.cmp(&b.name));
        sources
    }

    /// Every bundle as `ListBundles` shows it, by name. Shared with the dashboard.
    pub(crate) fn bundles(&self) -> Vec<pb::Bundle> {
        self.fleet
            .bundle_overviews()
            .into_iter()
            .map(|b| pb::Bundle {
                clusters: count(b.summary.total()),
                ready: count(b.summary.ready()),
                state: b.state.map(|s| s.to_string()).unwrap_or_default(),
                name: b.name,
                source: b.source,
                path: b.path,
                commit: b.commit,
                error: b.errors.join("\n"),
                warnings: b.warnings,
            })
            .collect()
    }

    /// The status rows `GetStatus` answers for `req`. Shared with the dashboard.
    pub(crate) fn status_rows(
        &self,
        req: &pb::GetStatusRequest,
    ) -> Result<pb::GetStatusResponse, Status> {
        let offset: usize = if req.page_token.is_empty() {
            0
        } else {
            req.page_token
                .parse()
                .map_err(|_| Status::invalid_argument("malformed page token"))?
        };
        let limit = if req.page_size == 0 {
            usize::MAX
        } else {
            req.page_size as usize
        };
        let mut rows = Vec::new();
        let mut seen = 0usize;
        let mut more = false;
        // Per bundle, not per row: every cluster's row of a bundle has the same warnings.
        let mut warnings: std::collections::HashMap<(Arc<str>, Arc<str>), Vec<String>> =
            std::collections::HashMap::new();
        'clusters: for c in self.fleet.sorted_clusters() {
            if !req.cluster.is_empty() && req.cluster != c.as_str() {
                continue;
            }
            for (bundle, a) in self.fleet.assignments_of(&c).iter() {
                if !req.bundle.is_empty() && *req.bundle != **bundle {
                    continue;
                }
                let (state, message) = self.fleet.row_state(&c, bundle, a);
                if req.not_ready && state == State::Ready {
                    continue;
                }
                seen += 1;
                if seen <= offset {
                    continue;
                }
                if rows.len() == limit {
                    more = true;
                    break 'clusters;
                }
                let st = self.fleet.status.get(&c, bundle);
                rows.push(pb::StatusRow {
                    warnings: warnings
                        .entry((a.source.clone(), bundle.clone()))
                        .or_insert_with(|| self.fleet.bundle_warnings(&a.source, bundle))
                        .clone(),
                    staged_deployment_id: a
                        .staged
                        .as_ref()
                        .or(a.desired.as_ref().map(|d| &d.deployment_id))
                        .map(ToString::to_string)
                        .unwrap_or_default(),
                    cluster: c.to_string(),
                    bundle: bundle.to_string(),
                    state: state.to_string(),
                    message,
                    deployment_id: a
                        .desired
                        .as_ref()
                        .map(|d| d.deployment_id.to_string())
                        .unwrap_or_default(),
                    updated: st
                        .as_ref()
                        .map(|s| rfc3339(s.updated_at))
                        .unwrap_or_default(),
                    resources: st
                        .map(|s| {
                            s.resources
                                .iter()
                                .filter(|r| !req.not_ready || r.state != State::Ready)
                                .map(pb::ResourceStatus::from)
                                .collect()
                        })
                        .unwrap_or_default(),
                });
            }
        }
        let next_page_token = if more {
            (offset + rows.len()).to_string()
        } else {
            String::new()
        };
        Ok(pb::GetStatusResponse {
            rows,
            next_page_token,
        })
    }
}

fn parse_selector(field: &str, text: &str) -> Result<Option<LabelSelector>, Status> {
    if text.trim().is_empty() {
        return Ok(None);
    }
    text.parse::<LabelSelector>()
        .map(Some)
        .map_err(|e| Status::invalid_argument(format!("{field}: {e}")))
}

fn non_empty(s: &str) -> Option<String> {
    (!s.trim().is_empty()).then(|| s.trim().to_string())
}

fn target_from_pb(t: &pb::Target) -> Result<TargetSpec, Status> {
    let spec = TargetSpec {
        name: t.name.clone(),
        cluster_selector: parse_selector("clusterSelector", &t.cluster_selector)?,
        cluster_group: non_empty(&t.cluster_group),
        cluster_group_selector: parse_selector("clusterGroupSelector", &t.cluster_group_selector)?,
        cluster_name: non_empty(&t.cluster_name),
    };
    if spec
        == (TargetSpec {
            name: spec.name.clone(),
            ..Default::default()
        })
    {
        // An empty target matches nothing; from the CLI it is a typo, not a wish.
        return Err(Status::invalid_argument(
            "a target needs at least one of clusterSelector, clusterGroup, clusterGroupSelector, clusterName",
        ));
    }
    Ok(spec)
}

fn target_to_pb(t: &TargetSpec) -> pb::Target {
    pb::Target {
        name: t.name.clone(),
        cluster_selector: t
            .cluster_selector
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default(),
        cluster_group: t.cluster_group.clone().unwrap_or_default(),
        cluster_group_selector: t
            .cluster_group_selector
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default(),
        cluster_name: t.cluster_name.clone().unwrap_or_default(),
    }
}

fn validate_source(s: &pb::Source) -> Result<SourceSpec, Status> {
    let spec = SourceSpec {
        name: s.name.clone(),
        repo: s.repo.trim().to_string(),
        branch: if s.branch.is_empty() {
            "main".to_string()
        } else {
            s.branch.clone()
        },
        paths: s.paths.clone(),
        interval_secs: if s.polling_disabled {
            0
        } else if s.interval_seconds == 0 {
            15
        } else {
            s.interval_seconds
        },
        targets: s
            .targets
            .iter()
            .map(target_from_pb)
            .collect::<Result<Vec<_>, Status>>()?,
        revision: non_empty(&s.revision),
        paused: s.paused,
        verify_commits: s.verify_commits,
        username: s.auth.as_ref().and_then(|a| non_empty(&a.username)),
        helm_auth: s.helm_auth.as_ref().map(|h| HelmAuthSpec {
            username: h.username.clone(),
            url_regex: h.url_regex.clone(),
            plain_http: h.plain_http,
        }),
    };
    Ok(commands::check_source(spec)?)
}

/// The secret parts of a source request, as the source commands take them.
fn source_secrets(auth: Option<pb::SourceAuth>, helm: Option<pb::HelmRepoAuth>) -> SourceSecrets {
    let auth = auth.unwrap_or_default();
    let helm = helm.unwrap_or_default();
    SourceSecrets {
        credentials: vec![
            (Kind::Password, auth.password),
            (Kind::SshKey, auth.ssh_key),
            (Kind::KnownHosts, auth.known_hosts),
            (Kind::Ca, auth.ca_pem),
            (Kind::WebhookSecret, auth.webhook_secret),
            (Kind::AllowedSigners, auth.allowed_signers),
            (Kind::GpgKeys, auth.gpg_keys),
        ],
        helm: vec![
            (charts::auth::Secret::Password, helm.password),
            (charts::auth::Secret::Ca, helm.ca_pem),
            (charts::auth::Secret::Token, helm.token),
        ],
    }
}

#[tonic::async_trait]
impl Admin for AdminService {
    async fn list_clusters(
        &self,
        request: Request<pb::ListClustersRequest>,
    ) -> Result<Response<pb::ListClustersResponse>, Status> {
        peer::require_operator(&request, Role::Viewer)?;
        let clusters = self.clusters();
        Ok(Response::new(pb::ListClustersResponse { clusters }))
    }

    async fn label_cluster(
        &self,
        request: Request<pb::LabelClusterRequest>,
    ) -> Result<Response<pb::Cluster>, Status> {
        peer::require_operator(&request, Role::Admin)?;
        self.fleet.refuse_in_kube_mode()?;
        let req = request.into_inner();
        let name =
            ClusterName::new(&req.name).map_err(|e| Status::invalid_argument(e.to_string()))?;
        self.fleet
            .label_cluster(&name, &req.set, &req.remove)
            .await?;
        self.found_cluster(&name).map(Response::new)
    }

    async fn ca_status(
        &self,
        request: Request<pb::CaStatusRequest>,
    ) -> Result<Response<pb::CaStatusResponse>, Status> {
        peer::require_operator(&request, Role::Viewer)?;
        Ok(Response::new(crate::renewals::ca_status(&self.fleet)))
    }

    async fn renew_certificates(
        &self,
        request: Request<pb::RenewCertificatesRequest>,
    ) -> Result<Response<pb::RenewCertificatesResponse>, Status> {
        let operator = peer::require_operator(&request, Role::Admin)?;
        let req = request.into_inner();
        // A day is already far longer than anyone watching a rotation waits.
        const MAX_WINDOW: u64 = 24 * 3600;
        if req.window_seconds > MAX_WINDOW {
            return Err(Status::invalid_argument(format!(
                "window_seconds {} is over {MAX_WINDOW}",
                req.window_seconds
            )));
        }
        let window = std::time::Duration::from_secs(req.window_seconds);
        let scheduled = crate::renewals::ask_connected(&self.fleet, window, req.all);
        tracing::info!(%operator, scheduled, window_s = req.window_seconds, all = req.all, "spokes asked to renew their certificates");
        Ok(Response::new(pb::RenewCertificatesResponse {
            scheduled: count(scheduled),
        }))
    }

    async fn rotate_ca(
        &self,
        request: Request<pb::RotateCaRequest>,
    ) -> Result<Response<pb::RotateCaResponse>, Status> {
        let operator = peer::require_operator(&request, Role::Admin)?;
        let fleet = self.fleet.clone();
        // Key generation and file writes: off the async workers.
        let rotated = tokio::task::spawn_blocking(move || crate::renewals::rotate_ca(&fleet))
            .await
            .map_err(|e| Status::internal(format!("CA rotation task: {e}")))?
            .map_err(|e| {
                tracing::warn!(%operator, error = %format!("{e:#}"), "CA rotation refused or failed");
                Status::failed_precondition(format!("{e:#}"))
            })?;
        tracing::info!(%operator, signing_ca = %rotated.signing_ca_sha256, scheduled = rotated.scheduled, "CA rotated on the running hub; connected spokes asked to renew");
        Ok(Response::new(rotated))
    }

    async fn retire_ca(
        &self,
        request: Request<pb::RetireCaRequest>,
    ) -> Result<Response<pb::RetireCaResponse>, Status> {
        let operator = peer::require_operator(&request, Role::Admin)?;
        let force = request.into_inner().force;
        let fleet = self.fleet.clone();
        // Key generation and file writes: off the async workers.
        let retired = tokio::task::spawn_blocking(move || crate::renewals::retire_ca(&fleet, force))
            .await
            .map_err(|e| Status::internal(format!("CA retirement task: {e}")))?
            .map_err(|e| {
                tracing::warn!(%operator, force, error = %format!("{e:#}"), "CA retirement refused or failed");
                Status::failed_precondition(format!("{e:#}"))
            })?;
        tracing::info!(%operator, force, ca = %retired.ca_sha256, "previous CA retired on the running hub");
        Ok(Response::new(retired))
    }

    async fn accept_cluster_labels(
        &self,
        request: Request<pb::AcceptClusterLabelsRequest>,
    ) -> Result<Response<pb::Cluster>, Status> {
        peer::require_operator(&request, Role::Admin)?;
        self.fleet.refuse_in_kube_mode()?;
        let req = request.into_inner();
        let name =
            ClusterName::new(&req.name).map_err(|e| Status::invalid_argument(e.to_string()))?;
        self.fleet.accept_cluster_labels(&name, &req.keys).await?;
        self.found_cluster(&name).map(Response::new)
    }

    async fn list_sources(
        &self,
        request: Request<pb::ListSourcesRequest>,
    ) -> Result<Response<pb::ListSourcesResponse>, Status> {
        peer::require_operator(&request, Role::Viewer)?;
        let sources = self.sources();
        Ok(Response::new(pb::ListSourcesResponse { sources }))
    }

    async fn add_source(
        &self,
        request: Request<pb::AddSourceRequest>,
    ) -> Result<Response<pb::Source>, Status> {
        peer::require_operator(&request, Role::Admin)?;
        self.fleet.refuse_in_kube_mode()?;
        let src = request
            .into_inner()
            .source
            .ok_or_else(|| Status::invalid_argument("source is required"))?;
        let spec = validate_source(&src)?;
        let state = self
            .fleet
            .add_source(spec, source_secrets(src.auth, src.helm_auth))
            .await?;
        Ok(Response::new(self.source_view(&state)))
    }

    async fn remove_source(
        &self,
        request: Request<pb::RemoveSourceRequest>,
    ) -> Result<Response<pb::RemoveSourceResponse>, Status> {
        peer::require_operator(&request, Role::Admin)?;
        self.fleet.refuse_in_kube_mode()?;
        let req = request.into_inner();
        self.fleet
            .remove_source(&req.name, req.keep_resources)
            .await?;
        Ok(Response::new(pb::RemoveSourceResponse {}))
    }

    async fn set_source(
        &self,
        request: Request<pb::SetSourceRequest>,
    ) -> Result<Response<pb::Source>, Status> {
        peer::require_operator(&request, Role::Admin)?;
        self.fleet.refuse_in_kube_mode()?;
        let req = request.into_inner();
        let targets = if req.set_targets {
            Some(
                req.targets
                    .iter()
                    .map(target_from_pb)
                    .collect::<Result<Vec<_>, Status>>()?,
            )
        } else {
            None
        };
        let mut clear = Vec::new();
        let mut clear_username = false;
        for c in &req.clear_credentials {
            if c == "username" {
                clear_username = true;
            } else {
                clear.push(Kind::parse(c).ok_or_else(|| {
                    Status::invalid_argument(format!(
                        "unknown credential {c:?}; one of username, {}",
                        Kind::ALL.map(Kind::name).join(", ")
                    ))
                })?);
            }
        }
        let user = req.auth.as_ref().and_then(|a| non_empty(&a.username));
        let edit = |spec: &mut SourceSpec| {
            if let Some(repo) = req.repo {
                spec.repo = repo.trim().to_string();
            }
            if let Some(branch) = req.branch {
                spec.branch = branch;
            }
            if let Some(revision) = req.revision {
                spec.revision = non_empty(&revision);
            }
            if req.set_paths {
                spec.paths = req.paths;
            }
            if let Some(interval) = req.interval_seconds {
                spec.interval_secs = interval;
            }
            if let Some(targets) = targets {
                spec.targets = targets;
            }
            if let Some(paused) = req.paused {
                spec.paused = paused;
            }
            if let Some(verify) = req.verify_commits {
                spec.verify_commits = verify;
            }
            if clear_username {
                spec.username = None;
            }
            if user.is_some() {
                spec.username = user;
            }
        };
        let secrets = source_secrets(req.auth.clone(), None);
        let state = self
            .fleet
            .set_source(&req.name, edit, secrets, clear)
            .await?;
        Ok(Response::new(self.source_view(&state)))
    }

    async fn list_bundles(
        &self,
        request: Request<pb::ListBundlesRequest>,
    ) -> Result<Response<pb::ListBundlesResponse>, Status> {
        peer::require_operator(&request, Role::Viewer)?;
        let bundles = self.bundles();
        Ok(Response::new(pb::ListBundlesResponse { bundles }))
    }

    async fn get_status(
        &self,
        request: Request<pb::GetStatusRequest>,
    ) -> Result<Response<pb::GetStatusResponse>, Status> {
        peer::require_operator(&request, Role::Viewer)?;
        self.status_rows(&request.into_inner()).map(Response::new)
    }

    async fn create_token(
        &self,
        request: Request<pb::CreateTokenRequest>,
    ) -> Result<Response<pb::CreateTokenResponse>, Status> {
        peer::require_operator(&request, Role::Admin)?;
        let req = request.into_inner();
        let created = self
            .fleet
            .create_token(NewToken {
                ttl_secs: req.ttl_seconds,
                max_uses: req.max_uses,
                description: req.description,
                labels: req.labels,
                spoke_label_keys: req.spoke_label_keys,
            })
            .await?;
        Ok(Response::new(pb::CreateTokenResponse {
            id: created.record.id,
            join: created.join,
            expires: rfc3339(created.record.expires_at),
        }))
    }

    async fn list_tokens(
        &self,
        request: Request<pb::ListTokensRequest>,
    ) -> Result<Response<pb::ListTokensResponse>, Status> {
        peer::require_operator(&request, Role::Viewer)?;
        let now = now_unix();
        let tokens: Vec<pb::Token> = self
            .fleet
            .list_tokens()
            .await?
            .into_iter()
            .map(|t| pb::Token {
                id: t.id,
                description: t.description,
                created: rfc3339(t.created_at),
                expires: rfc3339(t.expires_at),
                max_uses: t.max_uses,
                uses: t.uses,
                expired: now >= t.expires_at,
                labels: t.labels,
                spoke_label_keys: t.spoke_label_keys,
            })
            .collect();
        Ok(Response::new(pb::ListTokensResponse { tokens }))
    }

    async fn revoke_token(
        &self,
        request: Request<pb::RevokeTokenRequest>,
    ) -> Result<Response<pb::RevokeTokenResponse>, Status> {
        peer::require_operator(&request, Role::Admin)?;
        let id = request.into_inner().id;
        self.fleet.revoke_token(&id).await?;
        Ok(Response::new(pb::RevokeTokenResponse {}))
    }

    async fn list_groups(
        &self,
        request: Request<pb::ListGroupsRequest>,
    ) -> Result<Response<pb::ListGroupsResponse>, Status> {
        peer::require_operator(&request, Role::Viewer)?;
        let groups = self
            .fleet
            .group_overviews()
            .iter()
            .map(|g| group_to_pb(&g.spec, g.clusters, &g.summary))
            .collect();
        Ok(Response::new(pb::ListGroupsResponse { groups }))
    }

    async fn add_group(&self, request: Request<pb::Group>) -> Result<Response<pb::Group>, Status> {
        peer::require_operator(&request, Role::Admin)?;
        self.fleet.refuse_in_kube_mode()?;
        let g = request.into_inner();
        let spec = GroupSpec {
            name: g.name.clone(),
            selector: parse_selector("selector", &g.selector)?.unwrap_or_default(),
            labels: g.labels.clone(),
        };
        self.fleet.add_group(spec.clone()).await?;
        Ok(Response::new(group_to_pb(&spec, 0, &Summary::default())))
    }

    async fn remove_group(
        &self,
        request: Request<pb::RemoveGroupRequest>,
    ) -> Result<Response<pb::RemoveGroupResponse>, Status> {
        peer::require_operator(&request, Role::Admin)?;
        self.fleet.refuse_in_kube_mode()?;
        let name = request.into_inner().name;
        self.fleet.remove_group(&name).await?;
        Ok(Response::new(pb::RemoveGroupResponse {}))
    }

    async fn targets(
        &self,
        request: Request<pb::TargetsRequest>,
    ) -> Result<Response<pb::TargetsResponse>, Status> {
        peer::require_operator(&request, Role::Viewer)?;
        let req = request.into_inner();
        let rows = self
            .fleet
            .targets(&req.source, &req.bundle)?
            .into_iter()
            .map(|r| pb::TargetRow {
                cluster: r.cluster.to_string(),
                bundle: r.bundle,
                deployed: r.deployed,
                reason: r.reason,
                customization: r.customization,
                deployment_id: r.deployment_id,
            })
            .collect();
        Ok(Response::new(pb::TargetsResponse { rows }))
    }

    type WatchStream =
        std::pin::Pin<Box<dyn futures::Stream<Item = Result<pb::Event, Status>> + Send + 'static>>;

    async fn watch(
        &self,
        request: Request<pb::WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        peer::require_operator(&request, Role::Viewer)?;
        let rx = self.fleet.events.subscribe();
        let stream = tokio_stream::wrappers::BroadcastStream::new(rx).map(|e| {
            Ok(match e {
                Ok(e) => pb::Event {
                    kind: e.kind.to_string(),
                    cluster: e.cluster,
                    bundle: e.bundle,
                    source: e.source,
                    state: e.state,
                    message: e.message,
                    time: rfc3339(e.time),
                },
                // A slow watcher skipped events: tell it to re-read the state.
                Err(tokio_stream::wrappers::errors::BroadcastStreamRecvError::Lagged(n)) => {
                    pb::Event {
                        kind: "Lagged".into(),
                        message: format!("{n} events skipped; re-read the state"),
                        ..Default::default()
                    }
                }
            })
        });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn history(
        &self,
        request: Request<pb::HistoryRequest>,
    ) -> Result<Response<pb::HistoryResponse>, Status> {
        super::history::history(&self.fleet, request).await
    }

    async fn r#where(
        &self,
        request: Request<pb::WhereRequest>,
    ) -> Result<Response<pb::WhereResponse>, Status> {
        super::history::where_running(&self.fleet, request).await
    }

    async fn audit(
        &self,
        request: Request<pb::AuditRequest>,
    ) -> Result<Response<pb::AuditResponse>, Status> {
        super::audit::audit(&self.fleet, request)
    }

    async fn rollout_status(
        &self,
        request: Request<pb::RolloutRequest>,
    ) -> Result<Response<pb::Rollout>, Status> {
        peer::require_operator(&request, Role::Viewer)?;
        self.rollout_view(&request.into_inner().bundle)
            .map(Response::new)
    }

    async fn pause_rollout(
        &self,
        request: Request<pb::RolloutRequest>,
    ) -> Result<Response<pb::Rollout>, Status> {
        peer::require_operator(&request, Role::Admin)?;
        let bundle = request.into_inner().bundle;
        self.fleet.pause_rollout(&bundle, true).await?;
        self.rollout_view(&bundle).map(Response::new)
    }

    async fn resume_rollout(
        &self,
        request: Request<pb::RolloutRequest>,
    ) -> Result<Response<pb::Rollout>, Status> {
        peer::require_operator(&request, Role::Admin)?;
        let bundle = request.into_inner().bundle;
        self.fleet.pause_rollout(&bundle, false).await?;
        self.rollout_view(&bundle).map(Response::new)
    }

    async fn revoke_cluster(
        &self,
        request: Request<pb::RevokeClusterRequest>,
    ) -> Result<Response<pb::Cluster>, Status> {
        peer::require_operator(&request, Role::Admin)?;
        let name = ClusterName::new(&request.into_inner().name)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        self.fleet.revoke_cluster(&name).await?;
        self.found_cluster(&name).map(Response::new)
    }

    async fn delete_cluster(
        &self,
        request: Request<pb::DeleteClusterRequest>,
    ) -> Result<Response<pb::DeleteClusterResponse>, Status> {
        peer::require_operator(&request, Role::Admin)?;
        let name = ClusterName::new(&request.into_inner().name)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        self.fleet.delete_cluster(&name).await?;
        Ok(Response::new(pb::DeleteClusterResponse {}))
    }
}

/// A count as the wire carries it.
fn count(n: impl TryInto<u32>) -> u32 {
    n.try_into().unwrap_or(u32::MAX)
}

fn group_to_pb(g: &GroupSpec, clusters: usize, summary: &Summary) -> pb::Group {
    pb::Group {
        name: g.name.clone(),
        selector: g.selector.to_string(),
        labels: g.labels.clone(),
        clusters: count(clusters),
        bundles: count(summary.total()),
        bundles_ready: count(summary.ready()),
        state: summary.worst().map(|s| s.to_string()).unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_validation_fills_defaults_and_refuses_bad_input() {
        let ok = validate_source(&pb::Source {
            name: "apps".into(),
            repo: "git://127.0.0.1/x".into(),
            ..Default::default()
        })
        .expect("valid");
        assert_eq!(
            (ok.branch.as_str(), ok.paths.clone(), ok.interval_secs),
            ("main", vec![".".to_string()], 15)
        );
        for bad in [
            pb::Source {
                name: "Bad Name".into(),
                repo: "x".into(),
                ..Default::default()
            },
            pb::Source {
                name: "a".into(),
                repo: "".into(),
                ..Default::default()
            },
            pb::Source {
                name: "a".into(),
                repo: "x".into(),
                targets: vec![pb::Target {
                    cluster_selector: "env in (".into(),
                    ..Default::default()
                }],
                ..Default::default()
            },
            pb::Source {
                name: "a".into(),
                repo: "x".into(),
                targets: vec![pb::Target::default()],
                ..Default::default()
            },
            pb::Source {
                name: "a".into(),
                repo: "x".into(),
                branch: "--upload-pack=x".into(),
                ..Default::default()
            },
        ] {
            assert!(validate_source(&bad).is_err(), "{bad:?}");
        }
    }
}
