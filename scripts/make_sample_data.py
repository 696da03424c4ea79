"""Write the synthetic sample studies (CT chest, MR brain, DX chest) as DICOM files.

    python scripts/make_sample_data.py                 # regenerate the committed sample_dicom/
    python scripts/make_sample_data.py --out /tmp/x --ct-slices 60

With the default options the output is byte-identical to the committed ``sample_dicom/``
(``tests/test_sampledata.py`` checks this); see :mod:`pacs.sampledata` for what is drawn.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from pacs import sampledata

DEFAULT_OUT = Path(__file__).resolve().parent.parent / "sample_dicom"


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the options, write the studies and list what was written."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out",
        type=Path,
        default=DEFAULT_OUT,
        help="folder to write into (default: the repository's sample_dicom/)",
    )
    parser.add_argument(
        "--ct-slices",
        type=int,
        default=sampledata.CT_SLICES,
        help="axial CT slices (default: %(default)s)",
    )
    parser.add_argument(
        "--mr-slices",
        type=int,
        default=sampledata.MR_SLICES,
        help="axial MR slices (default: %(default)s)",
    )
    parser.add_argument(
        "--dx-size",
        type=int,
        default=sampledata.DX_SIZE,
        help="rows and columns of the chest radiograph (default: %(default)s)",
    )
    args = parser.parse_args(argv)
    try:
        paths = sampledata.write_sample_studies(
            args.out,
            ct_slices=args.ct_slices,
            mr_slices=args.mr_slices,
            dx_size=args.dx_size,
        )
    except ValueError as exc:
        parser.error(str(exc))
    total = 0
    for path in paths:
        size = path.stat().st_size
        total += size
        print(f"{path}  {size / 1024:.1f} KiB")
    print(f"{len(paths)} files, {total / 1_000_000:.2f} MB in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
