//! Text renderings of training reports for terminals (`attnflow train`,
//! `attnflow eval`); JSON comes from their `Serialize`.

use std::fmt::Write;

use crate::checkpoint::CheckpointMeta;
use crate::trainer::{Evaluation, Progress, TrainReport};

fn optional(value: Option<f64>) -> String {
    value.map_or("-".to_string(), |value| format!("{value:.4}"))
}

impl TrainReport {
    /// The report as lines of text: the run, the last step, the
    /// evaluations, the gradient flow and where the files are.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "blueprint {} ({} parameters), task {} ({:?} layout, length {}, {} token ids)",
            self.blueprint,
            self.parameters,
            self.task,
            self.format,
            self.sequence_length,
            self.task_vocab
        );
        let _ = writeln!(
            out,
            "step {} ({} this run, stopped: {:?}) in {:.1} s, {:.0} tokens/s",
            self.step,
            self.steps_this_run,
            self.stop_reason,
            self.elapsed_seconds,
            self.tokens_per_second
        );
        if let Some(last) = &self.last_step {
            let _ = writeln!(
                out,
                "last step: L {:.4}  R {}  J {:.4}  lr {:.2e}  |g| {:.3}",
                last.loss,
                optional(last.regulariser),
                last.objective,
                last.learning_rate,
                last.gradient_norm
            );
        }
        self.evaluations_text(&mut out);
        self.gradient_flow_text(&mut out);
        if let Some(output) = &self.output {
            let _ = writeln!(
                out,
                "\ncheckpoint, logs and report.json in {}",
                output.display()
            );
        }
        out
    }

    fn evaluations_text(&self, out: &mut String) {
        if self.evaluations.is_empty() {
            return;
        }
        let _ = writeln!(
            out,
            "\n{:>8}  {:>9}  {:>9}  {:>9}  {:>9}",
            "step", "val loss", "token acc", "seq acc", "entropy"
        );
        for evaluation in &self.evaluations {
            let _ = writeln!(
                out,
                "{:>8}  {:>9.4}  {:>9.4}  {:>9.4}  {:>9}",
                evaluation.step,
                evaluation.loss,
                evaluation.token_accuracy,
                evaluation.sequence_accuracy,
                optional(evaluation.attention_entropy)
            );
        }
    }

    fn gradient_flow_text(&self, out: &mut String) {
        let flow = &self.gradient_flow;
        if flow.layers.is_empty() {
            return;
        }
        let _ = writeln!(
            out,
            "\ngradient flow over {} logged steps (L2 norm per parameter)",
            flow.logged_steps
        );
        let _ = writeln!(
            out,
            "{:<24}  {:>10}  {:>10}  {:>10}",
            "layer", "min", "median", "max"
        );
        for layer in &flow.layers {
            let _ = writeln!(
                out,
                "{:<24}  {:>10.3e}  {:>10.3e}  {:>10.3e}",
                layer.layer, layer.min, layer.median, layer.max
            );
        }
        for flag in &flow.flags {
            let _ = writeln!(
                out,
                "flag: {:?} gradient of `{}` (first at step {}, {} logged steps, norm {:.3e})",
                flag.kind, flag.parameter, flag.first_step, flag.count, flag.norm
            );
        }
        for zero in &flow.structural_zeros {
            let _ = writeln!(
                out,
                "zero by construction: `{}` (largest norm {:.1e}): {}",
                zero.parameter, zero.largest_norm, zero.reason
            );
        }
    }
}

impl Evaluation {
    /// A checkpoint's evaluation as lines of text (`attnflow eval`).
    pub fn to_text(&self, meta: &CheckpointMeta) -> String {
        format!(
            "{} at step {} on {} ({} validation examples)\n\
             loss            {:.4}\n\
             token accuracy  {:.4}\n\
             seq accuracy    {:.4}\n\
             attention entropy {}\n",
            meta.blueprint,
            meta.step,
            meta.config.task.name(),
            self.examples,
            self.loss,
            self.token_accuracy,
            self.sequence_accuracy,
            optional(self.attention_entropy)
        )
    }
}

impl Progress<'_> {
    /// One line for a progress bar: loss, regulariser and objective when
    /// one is set, throughput, and the latest validation accuracy.
    pub fn status_line(&self) -> String {
        let metrics = self.metrics;
        let mut line = format!("L {:.4}", metrics.loss);
        if let Some(value) = metrics.regulariser {
            let _ = write!(line, " R {value:.4} J {:.4}", metrics.objective);
        }
        let _ = write!(line, " {:.0} tok/s", metrics.tokens_per_second);
        if let Some(evaluation) = self.evaluation {
            let _ = write!(line, " | val acc {:.3}", evaluation.sequence_accuracy);
        }
        line
    }
}
