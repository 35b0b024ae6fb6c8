#!/usr/bin/env bash
# A partitioned eigen_training sweep as a Slurm job array, then one merge job.
#
#   bash scripts/slurm_eigen_training.sh    # on the login node: submits spectrum → array → merge
#
# (the script submits itself three times with STAGE=spectrum|partition|merge; run it with
# bash, not sbatch, so that "$0" is its real path).
#
# Each array task trains every NUM_PARTITIONS-th configured eigenfunction index, starting
# at position $SLURM_ARRAY_TASK_ID, and writes one atomic CSV:
#   data/07_model_output/eigen_training/<dataset>/<model>/partitions/part-PPP-of-NNN.csv
# The merge job refuses to run on missing or foreign partitions. Details: docs/scaling.md.
#
# Edit the variables below (or export them before sbatch). The project folder must be
# on a filesystem shared by all nodes (data/ holds the spectrum and the partitions).
#SBATCH --job-name=eigen-training
#SBATCH --cpus-per-task=8
#SBATCH --mem=64G
#SBATCH --gres=gpu:1
#SBATCH --time=04:00:00
#SBATCH --output=logs/%x-%A_%a.out

set -euo pipefail

ENV_NAME="${ENV_NAME:-gpu}"                 # conf/<env>: gpu (paper scale, one GPU) | paper | base
MODEL="${MODEL:-lenet}"
DATASET="${DATASET:-cifar10}"
NUM_PARTITIONS="${NUM_PARTITIONS:-8}"      # ≤ number of configured label_idx entries
PROJECT_DIR="${PROJECT_DIR:-${SLURM_SUBMIT_DIR:-$(pwd)}}"
PARAMS="model=${MODEL},data.dataset=${DATASET}"

cd "${PROJECT_DIR}"
mkdir -p logs
# Spawned workers, never forked after JAX started (README "GPU").
export KEDRO_MP_CONTEXT=spawn

kedro_run() {
    python -m kedro run --env "${ENV_NAME}" "$@"
}

case "${STAGE:-submit}" in
submit)
    # 1. ntk_spectrum once (it also prepares the data): every array task reads its outputs,
    #    so no two jobs ever write the same file. Skip with SKIP_SPECTRUM=1 if it is done.
    dep=""
    if [[ "${SKIP_SPECTRUM:-0}" != 1 ]]; then
        jid=$(sbatch --parsable --export=ALL,STAGE=spectrum "$0")
        dep="--dependency=afterok:${jid}"
    fi
    # 2. The array: one task per partition.
    aid=$(sbatch --parsable ${dep} --array=0-$((NUM_PARTITIONS - 1)) \
        --export=ALL,STAGE=partition "$0")
    # 3. The merge, after every array task succeeded (CPU only).
    sbatch --parsable --dependency=afterok:"${aid}" --gres=none --cpus-per-task=2 \
        --export=ALL,STAGE=merge "$0"
    ;;
spectrum)
    kedro_run --pipelines ntk_spectrum --params "${PARAMS}"
    ;;
partition)
    # --tags leaves the data nodes out: the task reads the prepared data of stage 1.
    kedro_run --pipelines eigen_training --tags eigen_training_sweep \
        --params "${PARAMS},eigen_training.partition=${SLURM_ARRAY_TASK_ID},eigen_training.num_partitions=${NUM_PARTITIONS}"
    ;;
merge)
    kedro_run --pipelines eigen_training --tags eigen_training_merge \
        --params "${PARAMS},eigen_training.num_partitions=${NUM_PARTITIONS}"
    kedro_run --pipelines reporting --params "${PARAMS}"
    ;;
*)
    echo "unknown STAGE=${STAGE}" >&2
    exit 2
    ;;
esac
