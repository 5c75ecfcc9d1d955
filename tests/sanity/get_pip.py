# Copyright: (c) 2026, homelab.inference contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Stand-in for the pip bootstrap script ansible-test downloads (get-pip.py from ci-files.testing.ansible.com).

ansible-test creates each sanity test's virtual environment without pip and runs this script with pip's own
``install`` arguments (``pip==<version>`` and its pinned packages), as pypa's get-pip.py takes them. That host is
not reachable from this machine; ansible-test says the script "can be manually downloaded and saved" to its cache,
and ``make sanity`` saves this one there instead: it installs the pip wheel the standard library bundles
(``ensurepip``), then lets that pip install the requested versions from the package index.
"""

import ensurepip
import os
import ssl
import subprocess
import sys

# get-pip.py options that pip itself does not know
GET_PIP_ONLY = {"--no-setuptools", "--no-wheel"}

if __name__ == "__main__":
    ensurepip.bootstrap(upgrade=True)
    arguments = [argument for argument in sys.argv[1:] if argument not in GET_PIP_ONLY]
    # the bundled pip trusts certifi's CAs only; give it the system's store, as the newer pip it installs uses
    paths = ssl.get_default_verify_paths()
    cafile = next((path for path in (paths.cafile, paths.openssl_cafile) if path and os.path.exists(path)), None)
    certificates = ["--cert", cafile] if cafile else []
    sys.exit(subprocess.call([sys.executable, "-m", "pip", "install", "--upgrade", *certificates, *arguments]))
