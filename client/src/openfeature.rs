//! An OpenFeature provider (feature `openfeature`, the `open-feature` crate's
//! [`FeatureProvider`]) backed by the client's local evaluation: no network per evaluation,
//! the same stages the migrator and handles see, the same answer the server's OFREP endpoint
//! gives for the same entity.
//!
//! The flag key is the migration key and the context's targeting key the entity key (none: the
//! operation has no entity and gets the trailing stage). The stage is the variant:
//! - a string evaluation returns the stage's name (`dual_write`);
//! - a struct evaluation returns the read/write plan (`stage`, `write`, `authoritative_write`,
//!   `read`, `return_value`, `shadow_compare`), as OFREP's value does;
//! - boolean and number evaluations are a type mismatch.
//!
//! The reason is `SPLIT` when the entity's bucket chose between two stages, `STATIC` when every
//! entity gets the same one, and `DEFAULT` when no snapshot knows the migration: the client's
//! fallback stage is returned with the error `FLAG_NOT_FOUND`, so the SDK hands the
//! application its own default instead.

use crate::Client;
use crate::slot::Origin;
use open_feature::provider::{FeatureProvider, ProviderMetadata, ResolutionDetails};
use open_feature::{
    EvaluationContext, EvaluationError, EvaluationErrorCode, EvaluationReason, EvaluationResult,
    FlagMetadata, StructValue, Value, async_trait,
};
use switchyard_domain::{Plan, Side};

/// Serves OpenFeature evaluations from a connected [`Client`].
pub struct SwitchyardProvider {
    client: Client,
    metadata: ProviderMetadata,
}

impl SwitchyardProvider {
    pub fn new(client: Client) -> Self {
        Self {
            client,
            metadata: ProviderMetadata::new("switchyard"),
        }
    }

    /// The stage of `flag_key` for the context's entity, with the reason and metadata; an
    /// error if no snapshot knows the migration.
    fn resolve(&self, flag_key: &str, context: &EvaluationContext) -> EvaluationResult<Resolved> {
        let entity = context.targeting_key.as_deref().map(str::as_bytes);
        let (stage, state) = self.client.eval(flag_key, entity);
        if state.origin == Origin::Fallback {
            return Err(EvaluationError::builder()
                .code(EvaluationErrorCode::FlagNotFound)
                .message(format!(
                    "no snapshot knows migration {flag_key:?}: the client's fallback stage \
                     ({stage}) is in effect"
                ))
                .build());
        }
        let rollout = state.rollout.get();
        let split = entity.is_some() && rollout > 0 && rollout < 10_000;
        Ok(Resolved {
            plan: stage.plan(),
            reason: if split {
                EvaluationReason::Split
            } else {
                EvaluationReason::Static
            },
            metadata: FlagMetadata::default()
                .with_value("version", self.client.version() as i64)
                .with_value("front_stage", state.stage.as_str().to_owned())
                .with_value("rollout_bp", i64::from(rollout)),
        })
    }
}

struct Resolved {
    plan: Plan,
    reason: EvaluationReason,
    metadata: FlagMetadata,
}

impl Resolved {
    fn details<T>(self, value: T) -> ResolutionDetails<T> {
        ResolutionDetails {
            value,
            variant: Some(self.plan.stage.as_str().to_owned()),
            reason: Some(self.reason),
            flag_metadata: Some(self.metadata),
        }
    }
}

fn side(s: Side) -> Value {
    Value::String(
        match s {
            Side::Old => "old",
            Side::New => "new",
            Side::Both => "both",
        }
        .to_owned(),
    )
}

/// The plan as OFREP's value holds it.
fn plan_value(plan: Plan) -> StructValue {
    StructValue::default()
        .with_field("stage", plan.stage.as_str().to_owned())
        .with_field("write", side(plan.write))
        .with_field("authoritative_write", side(plan.authoritative_write))
        .with_field("read", side(plan.read))
        .with_field("return_value", side(plan.return_value))
        .with_field("shadow_compare", plan.shadow_compare)
}

fn mismatch<T>(flag_key: &str, asked: &str) -> EvaluationResult<T> {
    Err(EvaluationError::builder()
        .code(EvaluationErrorCode::TypeMismatch)
        .message(format!(
            "migration {flag_key:?} is a stage: evaluate it as a string (the stage) or a struct \
             (the read/write plan), not as a {asked}"
        ))
        .build())
}

#[async_trait]
impl FeatureProvider for SwitchyardProvider {
    fn metadata(&self) -> &ProviderMetadata {
        &self.metadata
    }

    async fn resolve_bool_value(
        &self,
        flag_key: &str,
        _: &EvaluationContext,
    ) -> EvaluationResult<ResolutionDetails<bool>> {
        mismatch(flag_key, "boolean")
    }

    async fn resolve_int_value(
        &self,
        flag_key: &str,
        _: &EvaluationContext,
    ) -> EvaluationResult<ResolutionDetails<i64>> {
        mismatch(flag_key, "integer")
    }

    async fn resolve_float_value(
        &self,
        flag_key: &str,
        _: &EvaluationContext,
    ) -> EvaluationResult<ResolutionDetails<f64>> {
        mismatch(flag_key, "float")
    }

    async fn resolve_string_value(
        &self,
        flag_key: &str,
        context: &EvaluationContext,
    ) -> EvaluationResult<ResolutionDetails<String>> {
        let resolved = self.resolve(flag_key, context)?;
        let stage = resolved.plan.stage.as_str().to_owned();
        Ok(resolved.details(stage))
    }

    async fn resolve_struct_value(
        &self,
        flag_key: &str,
        context: &EvaluationContext,
    ) -> EvaluationResult<ResolutionDetails<StructValue>> {
        let resolved = self.resolve(flag_key, context)?;
        let value = plan_value(resolved.plan);
        Ok(resolved.details(value))
    }
}
