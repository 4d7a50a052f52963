"""Unpack helm and kubectl from an AWS CDK kubectl-layer wheel (scripts/ensure-tools.sh).

The wheel (downloaded from PyPI by pip) holds a jsii tarball, which holds
package/lib/layer.zip, which holds helm/helm and kubectl/kubectl: the official static
builds. Both are written to DEST as executables.

Usage: python kubectl_layer.py WHEEL_DIR DEST
  WHEEL_DIR  a directory holding exactly the downloaded wheel (*.whl)
  DEST       the directory to write helm and kubectl into (created when missing)
"""

import argparse
import glob
import io
import os
import tarfile
import zipfile


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("wheel_dir")
    parser.add_argument("dest")
    args = parser.parse_args()

    wheel = glob.glob(os.path.join(args.wheel_dir, "*.whl"))[0]
    with zipfile.ZipFile(wheel) as whl:
        tgz_name = next(n for n in whl.namelist() if "/_jsii/" in n and n.endswith(".tgz"))
        tgz = io.BytesIO(whl.read(tgz_name))
    with tarfile.open(fileobj=tgz, mode="r:gz") as tar:
        layer = io.BytesIO(tar.extractfile("package/lib/layer.zip").read())
    os.makedirs(args.dest, exist_ok=True)
    with zipfile.ZipFile(layer) as z:
        for member, out in (("helm/helm", "helm"), ("kubectl/kubectl", "kubectl")):
            with open(os.path.join(args.dest, out), "wb") as f:
                f.write(z.read(member))
            os.chmod(os.path.join(args.dest, out), 0o755)


if __name__ == "__main__":
    main()
