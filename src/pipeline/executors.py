"""Where tasks run: the executor settings DAG files attach to tasks (light to import: DAG files use it at parse time)."""

from __future__ import annotations

from typing import Any

#: The Celery queue of tasks that need a GPU (a worker started with ``airflow celery worker -q gpu``).
GPU_QUEUE = "gpu"


def gpu_executor_config(gpus: int = 1) -> dict[str, Any]:
    """Return the ``executor_config`` of a task that needs ``gpus`` GPUs under the KubernetesExecutor.

    A ``pod_override`` of the task's pod (container ``base``) requesting and limiting ``nvidia.com/gpu``
    and tolerating the usual GPU node taint, so it lands on the GPU node pool. The CeleryExecutor
    ignores it (there the ``gpu`` queue decides); so does the LocalExecutor of ``dag.test()``.
    """
    if gpus < 1:
        raise ValueError(f"a GPU task needs at least one GPU, got {gpus}")
    from kubernetes.client import models as k8s

    resources = k8s.V1ResourceRequirements(requests={"nvidia.com/gpu": str(gpus)}, limits={"nvidia.com/gpu": str(gpus)})
    pod = k8s.V1Pod(
        spec=k8s.V1PodSpec(
            containers=[k8s.V1Container(name="base", resources=resources)],
            tolerations=[k8s.V1Toleration(key="nvidia.com/gpu", operator="Exists", effect="NoSchedule")],
        )
    )
    return {"pod_override": pod}
