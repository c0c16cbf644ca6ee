"""The results.json schema ("fastnn-bench/5"), as data, and a validator for it.

A small subset of JSON Schema (type, required, properties, items, enum, minimum) so
no extra dependency is needed; docs/benchmark-schema.md describes every field.
"""

from __future__ import annotations

import math
from typing import Any

NUM = {"type": "number"}
NUM_OR_NULL = {"type": ["number", "null"]}
STR = {"type": "string"}
STR_OR_NULL = {"type": ["string", "null"]}
INT = {"type": "integer"}

STAT = {
    "type": "object",
    "required": ["median", "q1", "q3", "iqr", "min", "max", "n", "unit"],
    "properties": {
        "median": NUM,
        "q1": NUM,
        "q3": NUM,
        "iqr": NUM,
        "min": NUM,
        "max": NUM,
        "n": {"type": "integer", "minimum": 1},
        "unit": STR,
    },
}
STAT_OR_NULL = {**STAT, "type": ["object", "null"]}
SAMPLES = {"type": "array", "items": NUM}
#: The process a system was timed in (fastnn/bench/isolated.py).
PROCESS = {
    "type": "object",
    "required": ["pid", "same_environment", "environment_added", "imported_fastnn",
                 "setup_s"],
    "properties": {
        "pid": {"type": "integer", "minimum": 1},
        "same_environment": {"type": "boolean"},
        "environment_added": {"type": "object", "additional": STR},
        "imported_fastnn": {"type": "boolean"},
        "setup_s": NUM,
    },
}  # fmt: skip

OP_ROW = {
    "type": "object",
    "required": [
        "process",
        "op",
        "shape",
        "backend",
        "kind",
        "threads",
        "flops",
        "bytes",
        "working_set_bytes",
        "level",
        "cost_note",
        "first_call_s",
        "time",
        "samples_s",
        "speedup_vs_numpy",
        "gflops",
        "gbps",
        "pct_of_peak",
        "peak_ref",
    ],
    "properties": {
        "process": PROCESS,
        "op": STR,
        "shape": STR,
        "backend": STR,
        "kind": {"enum": ["gemm", "memory", "fused"]},
        "threads": INT,
        "flops": NUM_OR_NULL,
        "bytes": NUM_OR_NULL,
        "working_set_bytes": NUM_OR_NULL,
        "level": {"enum": ["memory", "cache", None]},
        "cost_note": STR,
        "first_call_s": NUM,
        "time": STAT,
        "samples_s": SAMPLES,
        "speedup_vs_numpy": STAT,
        "gflops": NUM_OR_NULL,
        "gbps": NUM_OR_NULL,
        "pct_of_peak": NUM_OR_NULL,
        "peak_ref": STR_OR_NULL,
    },
}
TRAIN_ROW = {
    "type": "object",
    "required": [
        "process",
        "workload",
        "layers",
        "batch_size",
        "n_samples",
        "system",
        "threads",
        "epoch_time",
        "samples_s",
        "samples_per_s",
        "baseline",
        "ratio_vs_baseline",
        "flops_per_sample",
        "gflops",
        "pct_of_sgemm_peak",
    ],
    "properties": {
        "process": PROCESS,
        "workload": STR,
        "layers": {"type": "array", "items": INT},
        "batch_size": {"type": "integer", "minimum": 1},
        "n_samples": {"type": "integer", "minimum": 1},
        "system": STR,
        "threads": INT,
        "epoch_time": STAT,
        "samples_s": SAMPLES,
        "samples_per_s": STAT,
        "baseline": STR_OR_NULL,
        "ratio_vs_baseline": STAT_OR_NULL,
        "flops_per_sample": NUM,
        "gflops": NUM,
        "pct_of_sgemm_peak": NUM,
    },
}
GEMM_BOUND_ROW = {
    "type": "object",
    "required": [
        "process",
        "workload",
        "layers",
        "batch_size",
        "threads",
        "products",
        "flops_per_step",
        "steps",
        "step_time",
        "samples_s",
        "samples_per_s",
        "gflops",
        "pct_of_sgemm_peak",
        "systems",
    ],
    "properties": {
        "process": PROCESS,
        "workload": STR,
        "layers": {"type": "array", "items": INT},
        "batch_size": {"type": "integer", "minimum": 1},
        "threads": {"type": "integer", "minimum": 1},
        "products": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["pass", "layer", "m", "k", "n", "flops"],
                "properties": {
                    "pass": {"enum": ["forward", "weight_grad", "input_grad"]},
                    "layer": {"type": "integer", "minimum": 0},
                    "m": {"type": "integer", "minimum": 1},
                    "k": {"type": "integer", "minimum": 1},
                    "n": {"type": "integer", "minimum": 1},
                    "flops": NUM,
                },
            },
        },
        "flops_per_step": NUM,
        "steps": {"type": "integer", "minimum": 1},
        "step_time": STAT,
        "samples_s": SAMPLES,
        "samples_per_s": STAT,
        "gflops": NUM,
        "pct_of_sgemm_peak": NUM,
        "systems": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["system", "samples_per_s", "pct_of_bound"],
                "properties": {
                    "system": STR,
                    "samples_per_s": NUM,
                    "pct_of_bound": STAT,
                },
            },
        },
    },
}
TARGET_GEMM_BOUND = {
    "type": ["object", "null"],
    "required": [
        "workload",
        "batch_size",
        "baseline",
        "baseline_samples_per_s",
        "needed_samples_per_s",
        "bound_samples_per_s",
        "needed_pct_of_bound",
        "exceeds_bound",
    ],
    "properties": {
        "workload": STR,
        "batch_size": INT,
        "baseline": STR,
        "baseline_samples_per_s": NUM,
        "needed_samples_per_s": NUM,
        "bound_samples_per_s": NUM,
        "needed_pct_of_bound": NUM,
        "exceeds_bound": {"type": "boolean"},
    },
}
SCALING_ROW = {
    "type": "object",
    "required": [
        "process",
        "system",
        "workload",
        "batch_size",
        "threads",
        "samples_per_s",
        "speedup_vs_1_thread",
        "samples_s",
        "efficiency",
    ],
    "properties": {
        "process": PROCESS,
        "system": STR,
        "workload": STR,
        "batch_size": INT,
        "threads": {"type": "integer", "minimum": 1},
        "samples_per_s": STAT,
        "speedup_vs_1_thread": STAT,
        "samples_s": SAMPLES,
        "efficiency": NUM,
    },
}
ESTIMATOR_ROW = {
    "type": "object",
    "required": [
        "process",
        "dataset",
        "layers",
        "epochs",
        "solver",
        "system",
        "threads",
        "fit_time",
        "samples_s",
        "speedup_vs_sklearn",
    ],
    "properties": {
        "process": PROCESS,
        "dataset": STR,
        "layers": {"type": "array", "items": INT},
        "epochs": {"type": "integer", "minimum": 1},
        "solver": {"enum": ["sgd", "adam"]},
        "system": STR,
        "threads": {"type": "integer", "minimum": 1},
        "fit_time": STAT,
        "samples_s": SAMPLES,
        "speedup_vs_sklearn": STAT_OR_NULL,
        # fastnn rows: Sequential.fit on the same network, data, batch and optimizer
        "sequential_fit": {
            "type": "object",
            "required": ["process", "fit_time", "samples_s"],
            "properties": {"process": PROCESS, "fit_time": STAT, "samples_s": SAMPLES},
        },
        "ratio_vs_sequential_fit": STAT,
    },
}
# MLPRegressor vs scikit-learn: the estimator row's fields, without Sequential.fit
REGRESSOR_ROW = {
    **ESTIMATOR_ROW,
    "properties": {
        k: v
        for k, v in ESTIMATOR_ROW["properties"].items()
        if k not in ("sequential_fit", "ratio_vs_sequential_fit")
    },
}
INFERENCE_ROW = {
    "type": "object",
    "required": ["workload", "layers", "rows", "system", "api", "threads",
                 "threads_in_use", "process", "min_sample_s", "time", "samples_s",
                 "rows_per_s", "speedup_vs"],
    "properties": {
        "workload": STR,
        "layers": {"type": "array", "items": INT},
        "rows": {"type": "integer", "minimum": 1},
        "system": STR,
        "api": STR,
        "threads": {"type": "integer", "minimum": 1},
        "threads_in_use": {"type": ["integer", "null"]},
        "process": PROCESS,
        "min_sample_s": {"type": "number", "minimum": 0},
        "time": STAT,  # seconds per call
        "samples_s": SAMPLES,
        "rows_per_s": STAT,
        "speedup_vs": {"type": "object", "additional": STAT},
    },
}  # fmt: skip
SIDE_EFFECT_ROW = {
    "type": "object",
    "required": ["workload", "batch_size", "n_samples", "system", "variant", "threads",
                 "process", "samples_s", "samples_per_s", "ratio_vs_plain"],
    "properties": {
        "workload": STR,
        "batch_size": {"type": "integer", "minimum": 1},
        "n_samples": {"type": "integer", "minimum": 1},
        "system": STR,
        "variant": {"enum": ["plain", "import fastnn", "fastnn fit"]},
        "threads": {"type": "integer", "minimum": 1},
        "process": PROCESS,
        "samples_s": SAMPLES,
        "samples_per_s": STAT,
        "ratio_vs_plain": STAT,
    },
}  # fmt: skip
DISTRIBUTED_ROW = {
    "type": "object",
    "required": ["system", "workload", "batch_size", "ranks", "threads_per_rank",
                 "process", "samples_s", "samples_per_s", "speedup_vs_1_rank"],
    "properties": {
        "system": STR,
        "workload": STR,
        "batch_size": {"type": "integer", "minimum": 1},
        "ranks": {"type": "integer", "minimum": 1},
        "threads_per_rank": {"type": "integer", "minimum": 1},
        "process": PROCESS,
        "samples_s": SAMPLES,
        "samples_per_s": STAT,
        "speedup_vs_1_rank": STAT,
    },
}  # fmt: skip
OWN_GEMM_ROW = {
    "type": "object",
    "required": ["workload", "batch_size", "threads", "cpu", "isa", "own_step_s",
                 "openblas_step_s", "numpy_step_s", "own_gflops", "openblas_gflops",
                 "numpy_gflops", "speedup", "speedup_vs_numpy", "target",
                 "process"],
    "properties": {
        "workload": STR,
        "batch_size": {"type": "integer", "minimum": 1},
        "threads": {"type": "integer", "minimum": 1},
        "cpu": STR,
        "isa": {"enum": ["generic", "avx2", "avx512"]},
        "own_step_s": STAT,
        "openblas_step_s": STAT,
        "numpy_step_s": STAT,
        "own_gflops": NUM,
        "openblas_gflops": NUM,
        "numpy_gflops": NUM,
        "speedup": STAT,  # over OpenBLAS in fastnn's blocks
        "speedup_vs_numpy": STAT,  # over np.matmul (OpenBLAS's threads): the target's
        # each product by the measured plan's kernel (reports from December 2026 on)
        "plan_step_s": STAT,
        "plan_gflops": NUM,
        "plan_speedup_vs_numpy": STAT,
        "target": NUM,
        "process": {"type": "object", "additional": PROCESS},
    },
}  # fmt: skip
COMPILE_ROW = {
    "type": "object",
    "required": [
        "backend",
        "cache",
        "threads",
        "workload",
        "batch_size",
        "import_s",
        "load_s",
        "first_step_s",
        "steady_step_s",
        "compile_s",
        "time_to_first_step_s",
        "process_wall_s",
    ],
    "properties": {
        "backend": STR,
        "cache": {"enum": ["cold", "installed", "warm", "n/a"]},
        "threads": INT,
        "workload": STR,
        "batch_size": INT,
        "import_s": NUM,
        "load_s": NUM,
        "first_step_s": NUM,
        "steady_step_s": STAT,
        "compile_s": {"type": "number", "minimum": 0},
        "time_to_first_step_s": NUM,
        "process_wall_s": NUM,
        # "installed" rows: the wall time of fastnn.precompile, which filled the cache
        "precompile_s": NUM,
    },
}
MEMORY_ROW = {
    "type": "object",
    "required": [
        "backend",
        "threads",
        "workload",
        "batch_size",
        "n_samples",
        "epochs",
        "optimizer",
        "dataset_bytes",
        "weights_bytes",
        "gradients_bytes",
        "optimizer_state_bytes",
        "activations_bytes",
        "needed_bytes",
        "baseline_rss_bytes",
        "maxrss_at_baseline_bytes",
        "peak_rss_bytes",
        "peak_increase_bytes",
        "rss_after_fit_bytes",
        "ratio",
        "process_wall_s",
    ],
    "properties": {
        "backend": STR,
        "threads": INT,
        "workload": STR,
        "batch_size": {"type": "integer", "minimum": 1},
        "n_samples": {"type": "integer", "minimum": 1},
        "epochs": {"type": "integer", "minimum": 1},
        "optimizer": STR,
        "dataset_bytes": {"type": "integer", "minimum": 1},
        "weights_bytes": {"type": "integer", "minimum": 1},
        "gradients_bytes": {"type": "integer", "minimum": 1},
        "optimizer_state_bytes": {"type": "integer", "minimum": 0},
        "activations_bytes": {"type": "integer", "minimum": 1},
        "needed_bytes": {"type": "integer", "minimum": 1},
        "baseline_rss_bytes": INT,
        "maxrss_at_baseline_bytes": INT,
        "peak_rss_bytes": INT,
        "peak_increase_bytes": INT,
        "rss_after_fit_bytes": INT,
        "ratio": NUM,
        "process_wall_s": NUM,
    },
}
PEAK = {
    "type": "object",
    "required": ["sgemm", "copy", "ceilings", "llc_bytes"],
    "properties": {
        "sgemm": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["threads", "n", "flops", "gflops"],
                "properties": {"threads": INT, "n": INT, "flops": NUM, "gflops": STAT},
            },
        },
        "copy": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["threads", "level", "array_bytes", "bytes_moved", "gbps"],
                "properties": {
                    "threads": INT,
                    "level": {"enum": ["memory", "cache"]},
                    "array_bytes": INT,
                    "bytes_moved": NUM,
                    "gbps": STAT,
                },
            },
        },
        "ceilings": {
            "type": "object",
            "additional": {
                "type": "object",
                "required": ["sgemm_gflops", "copy_gbps_memory", "copy_gbps_cache"],
                "properties": {
                    "sgemm_gflops": NUM,
                    "copy_gbps_memory": NUM,
                    "copy_gbps_cache": NUM,
                },
            },
        },
        "llc_bytes": INT,
    },
}
ENVIRONMENT = {
    "type": "object",
    "required": [
        "fastnn",
        "python",
        "platform",
        "packages",
        "backends",
        "threads",
        "thread_env",
        "blas",
        "cpu",
        "openmp",
        "numba_threading",
        "env_vars",
        "date",
        "loadavg_start",
        "loadavg_end",
        "source",
    ],
    "properties": {
        "cpu": {
            "type": "object",
            "required": ["model", "cores", "simd", "caches", "mhz"],
        },
        "blas": {
            "type": "array",
            "items": {"type": "object", "required": ["library", "version", "threads"]},
        },
        "openmp": {"type": "array"},
        "packages": {"type": "object"},
        "backends": {"type": "object"},
        "date": STR,
    },
}
RESULTS = {
    "type": "object",
    "required": [
        "schema",
        "created",
        "duration_s",
        "section_times_s",
        "config",
        "environment",
        "peak",
        "ops",
        "training",
        "gemm_bound",
        "scaling",
        "estimator",
        "side_effect",
        "compile",
        "memory",
        "skipped",
        "targets",
        "plots",
        "plots_note",
    ],
    "properties": {
        "schema": {"enum": ["fastnn-bench/5"]},
        "created": STR,
        "duration_s": {"type": "number", "minimum": 0},
        "section_times_s": {"type": "object", "additional": NUM},
        "config": {
            "type": "object",
            "required": [
                "mode",
                "threads",
                "backends",
                "peers",
                "systems",
                "dtype",
                "preset",
                "hyperparameters",
            ],
            "properties": {
                "mode": {"enum": ["quick", "full", "tiny"]},
                "threads": {
                    "type": "array",
                    "items": {"type": "integer", "minimum": 1},
                },
                "backends": {"type": "array", "items": STR},
                "peers": {
                    "type": "array",
                    "items": {"enum": ["numpy", "torch", "jax", "sklearn"]},
                },
                "systems": {"type": "array", "items": STR},
                "dtype": {"enum": ["float32"]},
                "preset": {"type": "object"},
                "hyperparameters": {"type": "object"},
            },
        },
        "environment": ENVIRONMENT,
        "peak": PEAK,
        "ops": {"type": "array", "items": OP_ROW},
        "training": {"type": "array", "items": TRAIN_ROW},
        "gemm_bound": {"type": "array", "items": GEMM_BOUND_ROW},
        "scaling": {"type": "array", "items": SCALING_ROW},
        "estimator": {"type": "array", "items": ESTIMATOR_ROW},
        # optional: reports from before fastnn had an MLPRegressor lack it
        "regressor": {"type": "array", "items": REGRESSOR_ROW},
        # optional: reports from before the inference section lack it
        "inference": {"type": "array", "items": INFERENCE_ROW},
        "side_effect": {"type": "array", "items": SIDE_EFFECT_ROW},
        "distributed": {"type": "array", "items": DISTRIBUTED_ROW},
        # optional: reports from before fastnn had its own GEMM lack it
        "own_gemm": {"type": "array", "items": OWN_GEMM_ROW},
        "compile": {"type": "array", "items": COMPILE_ROW},
        "memory": {"type": "array", "items": MEMORY_ROW},
        "skipped": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["section", "system", "reason"],
                "properties": {"section": STR, "system": STR, "reason": STR},
            },
        },
        "targets": {
            "type": "array",
            "items": {
                "type": "object",
                "required": [
                    "id",
                    "target",
                    "threshold",
                    "comparison",
                    "unit",
                    "values",
                    "status",
                    "note",
                    "gemm_bound",
                ],
                "properties": {
                    "id": STR,
                    "target": STR,
                    "threshold": NUM,
                    "comparison": {"enum": [">=", "<="]},
                    "unit": STR,
                    "values": {"type": "object", "additional": NUM_OR_NULL},
                    "status": STR,
                    "note": STR,
                    "gemm_bound": TARGET_GEMM_BOUND,
                },
            },
        },
        "plots": {"type": "object", "additional": STR},
        "plots_note": STR_OR_NULL,
    },
}

_TYPES = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: (
        isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
    ),
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
}


def errors(value: Any, schema: dict = RESULTS, path: str = "$") -> list[str]:
    """Every violation of ``schema`` in ``value`` (empty: valid)."""
    out: list[str] = []
    if "type" in schema:
        types = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        if not any(_TYPES[t](value) for t in types):
            return [f"{path}: expected {'/'.join(types)}, got {value!r:.60}"]
    if "enum" in schema and value not in schema["enum"]:
        out.append(f"{path}: {value!r} not in {schema['enum']}")
    if (
        "minimum" in schema
        and isinstance(value, (int, float))
        and value < schema["minimum"]
    ):
        out.append(f"{path}: {value} < {schema['minimum']}")
    if isinstance(value, dict):
        for key in schema.get("required", []):
            if key not in value:
                out.append(f"{path}: missing {key!r}")
        for key, sub in schema.get("properties", {}).items():
            if key in value:
                out += errors(value[key], sub, f"{path}.{key}")
        if "additional" in schema:
            for key, v in value.items():
                if key not in schema.get("properties", {}):
                    out += errors(v, schema["additional"], f"{path}.{key}")
    if isinstance(value, list) and "items" in schema:
        for i, v in enumerate(value):
            out += errors(v, schema["items"], f"{path}[{i}]")
    return out


def validate(results: dict[str, Any]) -> None:
    """Raise ValueError listing every violation of the results schema."""
    errs = errors(results)
    if errs:
        raise ValueError(
            "results.json does not follow fastnn-bench/5:\n" + "\n".join(errs[:50])
        )
