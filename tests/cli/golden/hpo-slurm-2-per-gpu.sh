#!/bin/bash

# Parameters
#SBATCH --array=0-15%16
#SBATCH --cpus-per-task=4
#SBATCH --error=<cwd>/runs/default/slurm/%A_%a/%A_%a_0_log.err
#SBATCH --gpus-per-node=1
#SBATCH --job-name=psy-default
#SBATCH --nodes=1
#SBATCH --ntasks-per-node=1
#SBATCH --open-mode=append
#SBATCH --output=<cwd>/runs/default/slurm/%A_%a/%A_%a_0_log.out
#SBATCH --requeue
#SBATCH --signal=USR2@120
#SBATCH --time=1440
#SBATCH --wckey=submitit

# setup
# worker of each array task: <python> -m psy_agents.cli.main worker --study default.joint.s0 --data-dir <cwd>/data --runs-dir <cwd>/runs --procs 2 --index <array task index>
# each array task I runs 2 worker processes, indices 2*I to 2*I+1 (`--procs 2`), each with 1/2 of the GPU's memory

# command
export SUBMITIT_EXECUTOR=slurm
srun --unbuffered --output <cwd>/runs/default/slurm/%A_%a/%A_%a_%t_log.out --error <cwd>/runs/default/slurm/%A_%a/%A_%a_%t_log.err <python> -u -m submitit.core._submit <cwd>/runs/default/slurm/%j

