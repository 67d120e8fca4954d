//! `fermyon:spin/llm@2.0.0`: large language models, as Spin's interface.
//!
//! Bantam has no inferencing engine. The interface is there so that guests
//! importing it (every componentize-py spin-sdk app does) link and run; a
//! call gets Spin's answers: `model-not-supported` for a model missing from
//! the component's `ai_models`, and a `runtime-error` naming the missing
//! engine for a granted one, as Spin answers when no engine is configured.

use crate::CapabilitiesView;
use crate::bindings::fermyon::spin::llm;

impl CapabilitiesView<'_> {
    fn llm_unavailable(&self, model: &str) -> llm::Error {
        let component = self.state.component();
        if !component.ai_models.iter().any(|m| m == model) {
            tracing::warn!(
                "component `{}` asked for AI model `{model}`, which is not in its ai_models",
                component.id
            );
            return llm::Error::ModelNotSupported;
        }
        llm::Error::RuntimeError(format!(
            "no inferencing engine is configured for model `{model}`: Bantam does not run AI models"
        ))
    }
}

impl llm::Host for CapabilitiesView<'_> {
    async fn infer(
        &mut self,
        model: String,
        _prompt: String,
        _params: Option<llm::InferencingParams>,
    ) -> wasmtime::Result<Result<llm::InferencingResult, llm::Error>> {
        Ok(Err(self.llm_unavailable(&model)))
    }

    async fn generate_embeddings(
        &mut self,
        model: String,
        _text: Vec<String>,
    ) -> wasmtime::Result<Result<llm::EmbeddingsResult, llm::Error>> {
        Ok(Err(self.llm_unavailable(&model)))
    }
}
