"""One line per test case of a JUnit XML report (schemathesis' report in
scripts/test-robustness.sh): "ok<TAB>NAME<TAB>" or "bad<TAB>NAME<TAB>DETAIL", DETAIL being
the first line (at most 300 characters) of the failure or error message.

Usage: python junit_results.py JUNIT_XML
"""

import sys
import xml.etree.ElementTree as ET


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    for case in ET.parse(sys.argv[1]).getroot().iter("testcase"):
        bad = next((e for e in case if e.tag in ("failure", "error")), None)
        detail = "" if bad is None else ((bad.get("message") or bad.text or "").strip().splitlines() or [""])[0][:300]
        print("ok" if bad is None else "bad", case.get("name"), detail, sep="\t")


if __name__ == "__main__":
    main()
