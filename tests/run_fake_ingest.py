"""Run the real `capindex` CLI in a subprocess with the fake captioner.

    python tests/run_fake_ingest.py DELAY ROW_GROUP ARGS...

DELAY is seconds per caption batch (to make a run slow enough to interrupt);
ROW_GROUP is the Parquet row-group size (small, so a killed run leaves a
half-written part behind). Used by the tests that kill or interrupt an ingest,
or that drop root's power to read any file.
"""

import sys

from fakes import FakeCaptioner

import capindex.store.parquet
from capindex.cli import main

if __name__ == "__main__":
    if "ray" in sys.argv:  # --engine ray: its workers do not import tests/
        import fakes
        from ray import cloudpickle

        cloudpickle.register_pickle_by_value(fakes)
    captioner = FakeCaptioner(delay=float(sys.argv[1]))
    capindex.store.parquet.ROW_GROUP_SIZE = int(sys.argv[2])
    main(args=sys.argv[3:], obj={"load_captioner": lambda model_path, device: captioner},
         prog_name="capindex")
