//! The gRPC API (tonic): the same operations and errors as HTTP. The only module that knows
//! tonic. Handlers only call the app: wire ↔ domain conversions are `switchyard_proto::convert`,
//! the wire forms of the server's own records are in `convert`.

mod convert;
pub mod lazy;
pub mod timing;
pub mod watch;

use crate::app::App;
use crate::auth::Principal;
use crate::error::ApiError;
use crate::hub::WatchItem;
use futures::{Stream, StreamExt};
use std::pin::Pin;
use std::sync::Arc;
use switchyard_domain::{Event, Operation, Version};
use switchyard_proto::convert::role_from_wire;
use switchyard_proto::v1 as pb;
use tonic::{Request, Response, Status};

pub use pb::switchyard_server::SwitchyardServer;
pub use watch::EncodedWatch;

pub struct GrpcApi {
    app: Arc<App>,
}

impl GrpcApi {
    pub fn new(app: Arc<App>) -> Self {
        Self { app }
    }

    /// The authenticated caller of `method`; a refusal is counted under the method called.
    async fn caller<T>(&self, method: &str, request: &Request<T>) -> Result<Principal, Status> {
        let header = request
            .metadata()
            .get("authorization")
            .map(|v| v.to_str().unwrap_or(""));
        self.app
            .auth
            .authenticate(header)
            .await
            .map_err(|e| status(method, e))
    }
}

/// The connection a request came on (tonic hands over the listener's connect info, wrapped
/// in TLS's when serving TLS).
fn watched_connection<T>(request: &Request<T>) -> Option<crate::conn::ConnHandle> {
    use crate::conn::GrpcConnectInfo;
    let extensions = request.extensions();
    extensions
        .get::<GrpcConnectInfo>()
        .or_else(|| {
            extensions
                .get::<tonic::transport::server::TlsConnectInfo<GrpcConnectInfo>>()
                .map(|tls| tls.get_ref())
        })
        .map(|info| info.handle.clone())
}

/// The one mapping from `ApiError` to a gRPC status. `details` carries an encoded
/// `ErrorDetail` (code, rule, current state).
pub fn status(method: &str, e: ApiError) -> Status {
    use tonic::Code;
    let code = match &e {
        ApiError::InvalidArgument { .. } => Code::InvalidArgument,
        ApiError::NotFound(_) => Code::NotFound,
        ApiError::AlreadyExists(_) => Code::AlreadyExists,
        ApiError::Stale { .. } => Code::Aborted,
        ApiError::Refused { .. }
        | ApiError::NotApplicable { .. }
        | ApiError::ApprovalRequired { .. } => Code::FailedPrecondition,
        ApiError::Unauthenticated(_) => Code::Unauthenticated,
        ApiError::PermissionDenied(_) => Code::PermissionDenied,
        ApiError::PayloadTooLarge(_) => Code::ResourceExhausted,
        // gRPC routes by method name; no handler returns this, but the mapping is total.
        ApiError::MethodNotAllowed(_) => Code::Unimplemented,
        // HTTP only, like the above.
        ApiError::RequestTimeout(_) => Code::DeadlineExceeded,
        ApiError::Unavailable(_) => Code::Unavailable,
        ApiError::Internal(detail) => {
            tracing::error!(%detail, method, "internal error");
            Code::Internal
        }
    };
    let detail = pb::ErrorDetail {
        code: e.code().to_owned(),
        rule: e.rule().map_or(0, |r| r.number()),
        current: e.current().map(pb::Migration::from),
    };
    count(method, code);
    switchyard_proto::status::rich_status(code, e.public_message(), &detail)
}

fn count(method: &str, code: tonic::Code) {
    metrics::counter!(
        "switchyard_grpc_requests_total",
        "method" => method.to_owned(),
        "code" => code_name(code)
    )
    .increment(1);
}

/// The canonical name of a gRPC status code (`FAILED_PRECONDITION`), as grpc-go's and
/// grpc-java's metrics label it, so dashboards and alerts written for them fit.
fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "OK",
        Cancelled => "CANCELLED",
        Unknown => "UNKNOWN",
        InvalidArgument => "INVALID_ARGUMENT",
        DeadlineExceeded => "DEADLINE_EXCEEDED",
        NotFound => "NOT_FOUND",
        AlreadyExists => "ALREADY_EXISTS",
        PermissionDenied => "PERMISSION_DENIED",
        ResourceExhausted => "RESOURCE_EXHAUSTED",
        FailedPrecondition => "FAILED_PRECONDITION",
        Aborted => "ABORTED",
        OutOfRange => "OUT_OF_RANGE",
        Unimplemented => "UNIMPLEMENTED",
        Internal => "INTERNAL",
        Unavailable => "UNAVAILABLE",
        DataLoss => "DATA_LOSS",
        Unauthenticated => "UNAUTHENTICATED",
    }
}

fn ok<T>(method: &str, value: T) -> Result<Response<T>, Status> {
    count(method, tonic::Code::Ok);
    Ok(Response::new(value))
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<pb::WatchEvent, Status>> + Send>>;

#[tonic::async_trait]
impl pb::switchyard_server::Switchyard for GrpcApi {
    async fn create_migration(
        &self,
        request: Request<pb::CreateMigrationRequest>,
    ) -> Result<Response<pb::Migration>, Status> {
        const M: &str = "CreateMigration";
        let who = self.caller(M, &request).await?;
        let input = request.into_inner().into();
        match self.app.create_migration(&who, input).await {
            Ok(m) => ok(M, pb::Migration::from(&m)),
            Err(e) => Err(status(M, e)),
        }
    }

    async fn get_migration(
        &self,
        request: Request<pb::GetMigrationRequest>,
    ) -> Result<Response<pb::Migration>, Status> {
        const M: &str = "GetMigration";
        let who = self.caller(M, &request).await?;
        match self.app.get_migration(&who, &request.get_ref().key) {
            Ok(m) => ok(M, pb::Migration::from(&*m)),
            Err(e) => Err(status(M, e)),
        }
    }

    async fn list_migrations(
        &self,
        request: Request<pb::ListMigrationsRequest>,
    ) -> Result<Response<pb::ListMigrationsResponse>, Status> {
        const M: &str = "ListMigrations";
        let who = self.caller(M, &request).await?;
        match self.app.snapshot(&who) {
            Ok(s) => ok(
                M,
                pb::ListMigrationsResponse {
                    migrations: pb::Snapshot::from(&*s).migrations,
                },
            ),
            Err(e) => Err(status(M, e)),
        }
    }

    async fn set_rollout(
        &self,
        request: Request<pb::SetRolloutRequest>,
    ) -> Result<Response<pb::Migration>, Status> {
        const M: &str = "SetRollout";
        let who = self.caller(M, &request).await?;
        let r = request.into_inner();
        let result = async {
            let op = Operation::try_from(&r)?;
            self.app
                .mutate_or_bypass(
                    &who,
                    &r.key,
                    Version(r.expected_version),
                    &r.reason,
                    op,
                    r.bypass_approval,
                )
                .await
        }
        .await;
        match result {
            Ok(m) => ok(M, pb::Migration::from(&m)),
            Err(e) => Err(status(M, e)),
        }
    }

    async fn advance(
        &self,
        request: Request<pb::StepRequest>,
    ) -> Result<Response<pb::Migration>, Status> {
        self.step("Advance", request, Operation::Advance).await
    }

    async fn retreat(
        &self,
        request: Request<pb::StepRequest>,
    ) -> Result<Response<pb::Migration>, Status> {
        self.step("Retreat", request, Operation::Retreat).await
    }

    async fn record_event(
        &self,
        request: Request<pb::RecordEventRequest>,
    ) -> Result<Response<pb::Migration>, Status> {
        const M: &str = "RecordEvent";
        let who = self.caller(M, &request).await?;
        let r = request.into_inner();
        let result = async {
            let event = Event::try_from(&r)?;
            self.app
                .mutate_or_bypass(
                    &who,
                    &r.key,
                    Version(r.expected_version),
                    &r.reason,
                    Operation::Record(event),
                    r.bypass_approval,
                )
                .await
        }
        .await;
        match result {
            Ok(m) => ok(M, pb::Migration::from(&m)),
            Err(e) => Err(status(M, e)),
        }
    }

    async fn audit(
        &self,
        request: Request<pb::AuditRequest>,
    ) -> Result<Response<pb::AuditResponse>, Status> {
        const M: &str = "Audit";
        let who = self.caller(M, &request).await?;
        let r = request.into_inner();
        let before = (r.before_id > 0).then_some(r.before_id);
        match self.app.audit(&who, &r.key, Some(r.limit), before).await {
            Ok((entries, next)) => ok(M, convert::audit_page(entries, next)),
            Err(e) => Err(status(M, e)),
        }
    }

    async fn get_snapshot(
        &self,
        request: Request<pb::GetSnapshotRequest>,
    ) -> Result<Response<pb::Snapshot>, Status> {
        const M: &str = "GetSnapshot";
        let who = self.caller(M, &request).await?;
        match self.app.snapshot(&who) {
            Ok(s) => ok(M, pb::Snapshot::from(&*s)),
            Err(e) => Err(status(M, e)),
        }
    }

    type WatchStream = WatchStream;

    /// Served by [`watch::EncodedWatch`], which sends each change's encoding shared by every
    /// watcher; this per-watcher encoding is for a server built without it.
    async fn watch(
        &self,
        request: Request<pb::WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let items = self.open_watch(request).await?;
        ok(
            "Watch",
            Box::pin(items.map(|item| item.map(pb::WatchEvent::from))) as WatchStream,
        )
    }

    async fn decide(
        &self,
        request: Request<pb::DecideRequest>,
    ) -> Result<Response<pb::Decision>, Status> {
        const M: &str = "Decide";
        let who = self.caller(M, &request).await?;
        let r = request.get_ref();
        let entity = (!r.entity_key.is_empty()).then_some(r.entity_key.as_str());
        match self.app.decide(&who, &r.key, entity) {
            Ok(d) => ok(M, pb::Decision::from(d)),
            Err(e) => Err(status(M, e)),
        }
    }

    async fn heartbeat(
        &self,
        request: Request<pb::HeartbeatRequest>,
    ) -> Result<Response<pb::HeartbeatResponse>, Status> {
        const M: &str = "Heartbeat";
        let who = self.caller(M, &request).await?;
        let r = request.into_inner();
        match self
            .app
            .heartbeat(
                &who,
                &r.service,
                &r.instance_id,
                Version(r.applied_version),
                &r.migrations,
                r.leaving,
            )
            .await
        {
            Ok(v) => ok(
                M,
                pb::HeartbeatResponse {
                    snapshot_version: v.0,
                },
            ),
            Err(e) => Err(status(M, e)),
        }
    }

    async fn list_instances(
        &self,
        request: Request<pb::ListInstancesRequest>,
    ) -> Result<Response<pb::ListInstancesResponse>, Status> {
        const M: &str = "ListInstances";
        let who = self.caller(M, &request).await?;
        let r = request.into_inner();
        let migration = (!r.migration.is_empty()).then_some(r.migration.as_str());
        let after = (!r.after.is_empty()).then_some(r.after.as_str());
        match self
            .app
            .instances(&who, migration, Some(r.limit), after)
            .await
        {
            Ok(page) => ok(
                M,
                pb::ListInstancesResponse {
                    instances: page
                        .instances
                        .into_iter()
                        .map(|v| convert::instance(v.instance, v.live, v.uses_migration))
                        .collect(),
                    next_after: page.next.unwrap_or_default(),
                },
            ),
            Err(e) => Err(status(M, e)),
        }
    }

    async fn report_telemetry(
        &self,
        request: Request<pb::ReportTelemetryRequest>,
    ) -> Result<Response<pb::ReportTelemetryResponse>, Status> {
        const M: &str = "ReportTelemetry";
        let who = self.caller(M, &request).await?;
        let r = request.into_inner();
        let (entries, samples) = convert::telemetry_entries(r.entries);
        match self
            .app
            .report_telemetry(&who, &r.service, &r.instance_id, entries, samples)
            .await
        {
            Ok(()) => ok(M, pb::ReportTelemetryResponse {}),
            Err(e) => Err(status(M, e)),
        }
    }

    async fn traffic(
        &self,
        request: Request<pb::TrafficRequest>,
    ) -> Result<Response<pb::TrafficResponse>, Status> {
        const M: &str = "Traffic";
        let who = self.caller(M, &request).await?;
        let r = request.into_inner();
        let minutes = (r.minutes > 0).then_some(r.minutes);
        match self.app.traffic(&who, &r.key, minutes).await {
            Ok(view) => ok(M, convert::traffic(r.key, &view.minutes, &view.total)),
            Err(e) => Err(status(M, e)),
        }
    }

    async fn gate(
        &self,
        request: Request<pb::GateRequest>,
    ) -> Result<Response<pb::GateReport>, Status> {
        const M: &str = "Gate";
        let who = self.caller(M, &request).await?;
        match self.app.gate(&who, &request.get_ref().key).await {
            Ok(report) => ok(M, pb::GateReport::from(&report)),
            Err(e) => Err(status(M, e)),
        }
    }

    async fn lifecycle(
        &self,
        request: Request<pb::LifecycleRequest>,
    ) -> Result<Response<pb::LifecycleResponse>, Status> {
        const M: &str = "Lifecycle";
        let who = self.caller(M, &request).await?;
        let days = match request.get_ref().complete_for_days {
            0 => crate::app::DEFAULT_COMPLETE_FOR_DAYS,
            n => n,
        };
        match self
            .app
            .lifecycle(
                &who,
                std::time::Duration::from_secs(u64::from(days) * 86_400),
            )
            .await
        {
            Ok(view) => ok(M, pb::LifecycleResponse::from(view)),
            Err(e) => Err(status(M, e)),
        }
    }

    async fn get_backfill(
        &self,
        request: Request<pb::GetBackfillRequest>,
    ) -> Result<Response<pb::BackfillProgress>, Status> {
        const M: &str = "GetBackfill";
        let who = self.caller(M, &request).await?;
        match self.app.backfill(&who, &request.get_ref().key).await {
            Ok(p) => ok(M, pb::BackfillProgress::from(&p)),
            Err(e) => Err(status(M, e)),
        }
    }

    async fn checkpoint_backfill(
        &self,
        request: Request<pb::BackfillCheckpointRequest>,
    ) -> Result<Response<pb::BackfillProgress>, Status> {
        const M: &str = "CheckpointBackfill";
        let who = self.caller(M, &request).await?;
        let r = request.into_inner();
        match self
            .app
            .checkpoint_backfill(&who, &r.key, (&r).into())
            .await
        {
            Ok(p) => ok(M, pb::BackfillProgress::from(&p)),
            Err(e) => Err(status(M, e)),
        }
    }

    async fn create_token(
        &self,
        request: Request<pb::CreateTokenRequest>,
    ) -> Result<Response<pb::CreateTokenResponse>, Status> {
        const M: &str = "CreateToken";
        let who = self.caller(M, &request).await?;
        let r = request.into_inner();
        let result = async {
            let role = role_from_wire(r.role)?;
            self.app.create_token(&who, &r.name, role, &r.scope).await
        }
        .await;
        match result {
            Ok((record, token)) => ok(
                M,
                pb::CreateTokenResponse {
                    info: Some(record.into()),
                    token,
                },
            ),
            Err(e) => Err(status(M, e)),
        }
    }

    async fn list_tokens(
        &self,
        request: Request<pb::ListTokensRequest>,
    ) -> Result<Response<pb::ListTokensResponse>, Status> {
        const M: &str = "ListTokens";
        let who = self.caller(M, &request).await?;
        match self.app.list_tokens(&who).await {
            Ok(list) => ok(
                M,
                pb::ListTokensResponse {
                    tokens: list.into_iter().map(pb::TokenInfo::from).collect(),
                },
            ),
            Err(e) => Err(status(M, e)),
        }
    }

    async fn revoke_token(
        &self,
        request: Request<pb::RevokeTokenRequest>,
    ) -> Result<Response<pb::TokenInfo>, Status> {
        const M: &str = "RevokeToken";
        let who = self.caller(M, &request).await?;
        match self.app.revoke_token(&who, request.get_ref().id).await {
            Ok(t) => ok(M, pb::TokenInfo::from(t)),
            Err(e) => Err(status(M, e)),
        }
    }

    async fn get_plan(
        &self,
        request: Request<pb::GetPlanRequest>,
    ) -> Result<Response<pb::PlanView>, Status> {
        const M: &str = "GetPlan";
        let who = self.caller(M, &request).await?;
        match self.app.plan(&who, &request.get_ref().key).await {
            Ok(view) => ok(M, self.plan_view(&view)),
            Err(e) => Err(status(M, e)),
        }
    }

    async fn set_plan(
        &self,
        request: Request<pb::SetPlanRequest>,
    ) -> Result<Response<pb::PlanView>, Status> {
        const M: &str = "SetPlan";
        let who = self.caller(M, &request).await?;
        let r = request.into_inner();
        let result = async {
            let body = switchyard_proto::json::PlanBody::try_from(&r)?;
            self.app.set_plan(&who, &r.key, &body).await
        }
        .await;
        match result {
            Ok(view) => ok(M, self.plan_view(&view)),
            Err(e) => Err(status(M, e)),
        }
    }

    async fn pause_plan(
        &self,
        request: Request<pb::PlanChangeRequest>,
    ) -> Result<Response<pb::PlanView>, Status> {
        self.plan_status("PausePlan", request, true).await
    }

    async fn resume_plan(
        &self,
        request: Request<pb::PlanChangeRequest>,
    ) -> Result<Response<pb::PlanView>, Status> {
        self.plan_status("ResumePlan", request, false).await
    }

    async fn list_plans(
        &self,
        request: Request<pb::ListPlansRequest>,
    ) -> Result<Response<pb::ListPlansResponse>, Status> {
        const M: &str = "ListPlans";
        let who = self.caller(M, &request).await?;
        match self.app.plans(&who).await {
            Ok(views) => ok(
                M,
                pb::ListPlansResponse {
                    plans: views.iter().map(|v| self.plan_view(v)).collect(),
                },
            ),
            Err(e) => Err(status(M, e)),
        }
    }

    async fn list_plan_templates(
        &self,
        request: Request<pb::ListPlanTemplatesRequest>,
    ) -> Result<Response<pb::ListPlanTemplatesResponse>, Status> {
        const M: &str = "ListPlanTemplates";
        let who = self.caller(M, &request).await?;
        match self.app.templates(&who).await {
            Ok(found) => ok(
                M,
                pb::ListPlanTemplatesResponse {
                    templates: found.iter().map(plan_template).collect(),
                },
            ),
            Err(e) => Err(status(M, e)),
        }
    }

    async fn set_plan_template(
        &self,
        request: Request<pb::SetPlanTemplateRequest>,
    ) -> Result<Response<pb::PlanTemplate>, Status> {
        const M: &str = "SetPlanTemplate";
        let who = self.caller(M, &request).await?;
        let r = request.get_ref();
        let result = async {
            let body = switchyard_proto::json::PlanTemplateBody::try_from(r)?;
            self.app.set_template(&who, &r.name, &body).await
        }
        .await;
        match result {
            Ok(t) => ok(M, plan_template(&t)),
            Err(e) => Err(status(M, e)),
        }
    }

    async fn remove_plan_template(
        &self,
        request: Request<pb::RemovePlanTemplateRequest>,
    ) -> Result<Response<pb::PlanTemplate>, Status> {
        const M: &str = "RemovePlanTemplate";
        let who = self.caller(M, &request).await?;
        match self
            .app
            .remove_template(&who, &request.get_ref().name)
            .await
        {
            Ok(t) => ok(M, plan_template(&t)),
            Err(e) => Err(status(M, e)),
        }
    }

    async fn add_webhook(
        &self,
        request: Request<pb::AddWebhookRequest>,
    ) -> Result<Response<pb::AddWebhookResponse>, Status> {
        const M: &str = "AddWebhook";
        let who = self.caller(M, &request).await?;
        let r = request.into_inner();
        let new = crate::webhooks::NewWebhook {
            url: r.url,
            migrations: r.migrations,
            events: r.events,
            format: if r.format.is_empty() {
                "json".to_owned()
            } else {
                r.format
            },
        };
        match self.app.add_webhook(&who, new).await {
            Ok((hook, secret)) => ok(
                M,
                pb::AddWebhookResponse {
                    webhook: Some(webhook(&hook)),
                    secret,
                },
            ),
            Err(e) => Err(status(M, e)),
        }
    }

    async fn list_webhooks(
        &self,
        request: Request<pb::ListWebhooksRequest>,
    ) -> Result<Response<pb::ListWebhooksResponse>, Status> {
        const M: &str = "ListWebhooks";
        let who = self.caller(M, &request).await?;
        match self.app.webhooks(&who).await {
            Ok(hooks) => ok(
                M,
                pb::ListWebhooksResponse {
                    webhooks: hooks.iter().map(webhook).collect(),
                },
            ),
            Err(e) => Err(status(M, e)),
        }
    }

    async fn remove_webhook(
        &self,
        request: Request<pb::WebhookRequest>,
    ) -> Result<Response<pb::Webhook>, Status> {
        const M: &str = "RemoveWebhook";
        let who = self.caller(M, &request).await?;
        match self.app.remove_webhook(&who, request.get_ref().id).await {
            Ok(removed) => ok(M, webhook(&removed)),
            Err(e) => Err(status(M, e)),
        }
    }

    async fn test_webhook(
        &self,
        request: Request<pb::WebhookRequest>,
    ) -> Result<Response<pb::TestWebhookResponse>, Status> {
        const M: &str = "TestWebhook";
        let who = self.caller(M, &request).await?;
        match self.app.test_webhook(&who, request.get_ref().id).await {
            Ok(delivery) => ok(M, pb::TestWebhookResponse { delivery }),
            Err(e) => Err(status(M, e)),
        }
    }

    async fn list_webhook_deliveries(
        &self,
        request: Request<pb::ListWebhookDeliveriesRequest>,
    ) -> Result<Response<pb::ListWebhookDeliveriesResponse>, Status> {
        const M: &str = "ListWebhookDeliveries";
        let who = self.caller(M, &request).await?;
        let r = request.get_ref();
        let limit = if r.limit == 0 { 50 } else { r.limit };
        match self.app.webhook_deliveries(&who, r.id, limit).await {
            Ok((hook, deliveries)) => ok(
                M,
                pb::ListWebhookDeliveriesResponse {
                    webhook: Some(webhook(&hook)),
                    deliveries: deliveries
                        .iter()
                        .map(|d| pb::WebhookDelivery::from(&crate::http::json::delivery(d)))
                        .collect(),
                },
            ),
            Err(e) => Err(status(M, e)),
        }
    }

    async fn request_approval(
        &self,
        request: Request<pb::RequestApprovalRequest>,
    ) -> Result<Response<pb::Approval>, Status> {
        use pb::request_approval_request::Change;
        const M: &str = "RequestApproval";
        let who = self.caller(M, &request).await?;
        let result = async {
            let (key, expected, reason, op) = match &request.get_ref().change {
                Some(Change::SetRollout(r)) => (
                    &r.key,
                    r.expected_version,
                    &r.reason,
                    Operation::try_from(r)?,
                ),
                Some(Change::Advance(r)) => {
                    (&r.key, r.expected_version, &r.reason, Operation::Advance)
                }
                Some(Change::Retreat(r)) => {
                    (&r.key, r.expected_version, &r.reason, Operation::Retreat)
                }
                Some(Change::RecordEvent(r)) => (
                    &r.key,
                    r.expected_version,
                    &r.reason,
                    Operation::Record(Event::try_from(r)?),
                ),
                None => {
                    return Err(ApiError::invalid(
                        "no change given: set one of set_rollout, advance, retreat, record_event",
                    ));
                }
            };
            self.app
                .request_approval(&who, key, Version(expected), reason, op)
                .await
        }
        .await;
        match result {
            Ok(filed) => ok(M, approval(&filed, None)),
            Err(e) => Err(status(M, e)),
        }
    }

    async fn list_approvals(
        &self,
        request: Request<pb::ListApprovalsRequest>,
    ) -> Result<Response<pb::ListApprovalsResponse>, Status> {
        const M: &str = "ListApprovals";
        let who = self.caller(M, &request).await?;
        let r = request.get_ref();
        let key = (!r.key.is_empty()).then_some(r.key.as_str());
        match self.app.approvals(&who, r.all, key).await {
            Ok(found) => ok(
                M,
                pb::ListApprovalsResponse {
                    approvals: found.iter().map(|a| approval(a, None)).collect(),
                },
            ),
            Err(e) => Err(status(M, e)),
        }
    }

    async fn get_approval(
        &self,
        request: Request<pb::GetApprovalRequest>,
    ) -> Result<Response<pb::Approval>, Status> {
        const M: &str = "GetApproval";
        let who = self.caller(M, &request).await?;
        match self.app.approval(&who, request.get_ref().id).await {
            Ok(found) => ok(M, approval(&found, None)),
            Err(e) => Err(status(M, e)),
        }
    }

    async fn approve_change(
        &self,
        request: Request<pb::DecideApprovalRequest>,
    ) -> Result<Response<pb::Approval>, Status> {
        self.decide_approval("ApproveChange", request, true).await
    }

    async fn reject_change(
        &self,
        request: Request<pb::DecideApprovalRequest>,
    ) -> Result<Response<pb::Approval>, Status> {
        self.decide_approval("RejectChange", request, false).await
    }
}

/// A template in the proto's shape (the HTTP answer's fields).
fn plan_template(t: &crate::store::StoredTemplate) -> pb::PlanTemplate {
    pb::PlanTemplate::from(&crate::http::json::plan_template(t))
}

/// A subscription in the proto's shape (never its secret).
fn webhook(w: &crate::store::StoredWebhook) -> pb::Webhook {
    pb::Webhook::from(&crate::http::json::webhook(w))
}

impl GrpcApi {
    /// A watch's items, authenticated, checked and filtered to the caller's scope; a revoked
    /// token's stream ends with UNAUTHENTICATED, its message naming the revoke.
    pub(crate) async fn open_watch(
        &self,
        request: Request<pb::WatchRequest>,
    ) -> Result<impl Stream<Item = Result<WatchItem, Status>> + Send + use<>, Status> {
        const M: &str = "Watch";
        let who = self.caller(M, &request).await?;
        self.app.snapshot(&who).map_err(|e| status(M, e))?;
        let since = Version(request.get_ref().since_version);
        self.app
            .check_since("since_version", since)
            .await
            .map_err(|e| status(M, e))?;
        let stream = self
            .app
            .hub
            .watch(since, who.token_id)
            .map_err(|e| status(M, e.into()))?;
        // The connection now carries a stream: it counts against the watch cap, not the
        // connection cap, for as long as the stream lives.
        let mark = watched_connection(&request).map(|c| c.mark_watch());
        let app = self.app.clone();
        // A scoped token's stream carries only what its scope covers.
        Ok(stream.filter_map(move |item| {
            let _carrying = &mark;
            std::future::ready(match item {
                Ok(item) => app.visible_item(&who, item).map(Ok),
                Err(crate::hub::TokenRevoked) => Some(Err(status(M, who.revoked()))),
            })
        }))
    }

    async fn plan_status(
        &self,
        method: &str,
        request: Request<pb::PlanChangeRequest>,
        pause: bool,
    ) -> Result<Response<pb::PlanView>, Status> {
        let who = self.caller(method, &request).await?;
        let r = request.get_ref();
        match self.app.pause_plan(&who, &r.key, pause, &r.reason).await {
            Ok(view) => ok(method, self.plan_view(&view)),
            Err(e) => Err(status(method, e)),
        }
    }

    /// The HTTP answer's fields, in the proto's shape.
    fn plan_view(&self, view: &crate::plans::PlanView) -> pb::PlanView {
        pb::PlanView::from(&crate::http::json::plan_view(view, self.app.now()))
    }

    async fn step(
        &self,
        method: &str,
        request: Request<pb::StepRequest>,
        op: Operation,
    ) -> Result<Response<pb::Migration>, Status> {
        let who = self.caller(method, &request).await?;
        let r = request.into_inner();
        match self
            .app
            .mutate_or_bypass(
                &who,
                &r.key,
                Version(r.expected_version),
                &r.reason,
                op,
                r.bypass_approval,
            )
            .await
        {
            Ok(m) => ok(method, pb::Migration::from(&m)),
            Err(e) => Err(status(method, e)),
        }
    }

    async fn decide_approval(
        &self,
        method: &str,
        request: Request<pb::DecideApprovalRequest>,
        approve: bool,
    ) -> Result<Response<pb::Approval>, Status> {
        let who = self.caller(method, &request).await?;
        let r = request.get_ref();
        match self
            .app
            .decide_approval(&who, r.id, approve, &r.reason)
            .await
        {
            Ok((decided, after)) => ok(method, approval(&decided, after.as_ref())),
            Err(e) => Err(status(method, e)),
        }
    }
}

/// An approval request in the proto's shape, with the migration after it was applied.
fn approval(
    a: &crate::store::StoredApproval,
    after: Option<&switchyard_domain::Migration>,
) -> pb::Approval {
    pb::Approval {
        migration: after.map(pb::Migration::from),
        ..pb::Approval::from(&crate::http::json::approval(a, None))
    }
}
