#!/bin/bash

# Parameters
#SBATCH --account=lab
#SBATCH --array=0-15%4
#SBATCH --constraint=a100
#SBATCH --cpus-per-task=8
#SBATCH --error=/shared/runs/slurm/%A_%a/%A_%a_0_log.err
#SBATCH --gpus-per-node=1
#SBATCH --job-name=psy-Paper_Run.1
#SBATCH --mail-type=END
#SBATCH --mem=32GB
#SBATCH --nodes=1
#SBATCH --ntasks-per-node=1
#SBATCH --open-mode=append
#SBATCH --output=/shared/runs/slurm/%A_%a/%A_%a_0_log.out
#SBATCH --partition=gpu
#SBATCH --qos=normal
#SBATCH --requeue
#SBATCH --signal=USR2@120
#SBATCH --time=600
#SBATCH --wckey=submitit

# setup
# worker of each array task (inside /images/psy-agents.sif): launch worker --study Paper_Run.1.joint.s0 --data-dir /shared/data/redsm5 --runs-dir /shared/runs --index <array task index>
module load cuda/12.4

# command
export SUBMITIT_EXECUTOR=slurm
srun --unbuffered --output /shared/runs/slurm/%A_%a/%A_%a_%t_log.out --error /shared/runs/slurm/%A_%a/%A_%a_%t_log.err apptainer exec --nv --bind /project/redsm5:/shared/data/redsm5 /images/psy-agents.sif python3 -u -m submitit.core._submit /shared/runs/slurm/%j

