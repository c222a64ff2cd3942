#!/usr/bin/env python3
"""Wait for a message in a maildir whose Subject contains a text; print its decoded body.

usage: mail.py MAILDIR SUBJECT_TEXT [TIMEOUT_SECONDS]
Prints "Subject: ..." then the text of every text/* part (HTML reduced to text, so label
tables read `name = value`). Exits 1 when no such message arrives in time."""

import email
import email.policy
import html
import re
import sys
import time
from pathlib import Path


def text_of(msg):
    parts = []
    for part in msg.walk():
        if part.get_content_maintype() != "text":
            continue
        body = part.get_content()
        if part.get_content_subtype() == "html":
            body = re.sub(r"<(style|head)[^>]*>.*?</\1>", " ", body, flags=re.S | re.I)
            # Alertmanager's default template lists labels as `<li>name = value</li>`.
            body = html.unescape(re.sub(r"<[^>]+>", " ", body))
        parts.append(re.sub(r"[ \t]+", " ", body))
    return "\n".join(parts)


def main():
    maildir, wanted = Path(sys.argv[1]), sys.argv[2]
    deadline = time.time() + float(sys.argv[3] if len(sys.argv) > 3 else 60)
    # The maildir is read at least once: a timeout of 0 asks whether the message is there now.
    while True:
        for f in sorted((maildir / "new").glob("*")) if (maildir / "new").is_dir() else []:
            msg = email.message_from_bytes(f.read_bytes(), policy=email.policy.default)
            subject = str(msg["Subject"] or "")
            if wanted in subject:
                print(f"Subject: {subject}")
                print(text_of(msg))
                return 0
        if time.time() >= deadline:
            return 1
        time.sleep(0.5)


if __name__ == "__main__":
    sys.exit(main())
