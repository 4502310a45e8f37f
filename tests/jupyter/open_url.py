"""A stand-in web browser for unattended sign-in tests: ``BROWSER="python open_url.py %s"``.

It GETs the URL and follows redirects, as a browser would with a provider
that consents automatically (the test provider does): the last redirect
lands on the kernel's loopback listener, which completes the sign-in.
"""

from __future__ import annotations

import sys
import urllib.request

if __name__ == "__main__":
    with urllib.request.urlopen(sys.argv[1], timeout=30) as response:
        response.read()
