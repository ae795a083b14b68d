"""Names of the environment variables that wire processes together (one table for all).

Set by the launchers (`flanjax/launchers.py`), read by `flanjax/train/distributed.py`.
"""

COORDINATOR_ENV = "FLANJAX_COORDINATOR"  # host:port of process 0's coordination service
NUM_PROCESSES_ENV = "FLANJAX_NUM_PROCESSES"  # total number of processes
PROCESS_ID_ENV = "FLANJAX_PROCESS_ID"  # this process's index, 0-based
LOCAL_DEVICE_IDS_ENV = "FLANJAX_LOCAL_DEVICE_IDS"  # optional comma list of local device ids
