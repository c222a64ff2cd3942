"""A real SMTP server for tests: aiosmtpd on 127.0.0.1 with STARTTLS required and AUTH
(PLAIN/LOGIN) required after TLS. Messages are stored in a maildir.

usage: server.py PORT CERT KEY MAILDIR USER PASSWORD
Prints "ready" on stdout once listening; stops on SIGTERM/SIGINT.

SMTP_AUTH_EXCLUDE (env, optional): comma-separated AUTH mechanisms not to offer, e.g. `LOGIN`
for Alertmanager, whose LOGIN client only understands the challenge texts "Username:" and
"Password:" while aiosmtpd sends "User Name" and "Password" (PLAIN works with both clients).
SMTP_DATA_DELAY_SECS (env, optional): seconds to wait before accepting each message's DATA (a
slow relay).
SMTP_REJECT_RCPT (env, optional): comma-separated addresses refused at RCPT TO with 550 (a
mailbox gone).
SMTP_TEMPFAIL_RCPT (env, optional): `address:n`, the n-th RCPT TO of that address (counting
from 1) refused with 451 (a greylist or a rate limit).
"""

import asyncio
import mailbox
import os
import signal
import ssl
import sys
import threading

from aiosmtpd.controller import Controller
from aiosmtpd.handlers import Mailbox
from aiosmtpd.smtp import AuthResult, LoginPassword


class Relay(Mailbox):
    """A Mailbox that waits SMTP_DATA_DELAY_SECS before accepting a message and refuses the
    recipients in SMTP_REJECT_RCPT."""

    def __init__(self, maildir: str, delay: float, reject: set, tempfail: tuple) -> None:
        super().__init__(maildir)
        self.delay = delay
        self.reject = reject
        self.tempfail = tempfail
        self.seen = {}

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        address_lc = address.lower()
        self.seen[address_lc] = self.seen.get(address_lc, 0) + 1
        if self.tempfail and (address_lc, self.seen[address_lc]) == self.tempfail:
            return "451 4.7.1 try again later"
        if address_lc in self.reject:
            return "550 5.1.1 mailbox unavailable"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        if self.delay > 0:
            await asyncio.sleep(self.delay)
        return await super().handle_DATA(server, session, envelope)


def main() -> None:
    port, cert, key, maildir, user, password = sys.argv[1:7]
    mailbox.Maildir(maildir, create=True)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)

    def authenticator(server, session, envelope, mechanism, auth_data):
        ok = (
            isinstance(auth_data, LoginPassword)
            and auth_data.login.decode() == user
            and auth_data.password.decode() == password
        )
        # handled=False: aiosmtpd itself answers 235 or 535.
        return AuthResult(success=ok, handled=False)

    delay = float(os.environ.get("SMTP_DATA_DELAY_SECS", "0"))
    reject = {
        a.strip().lower()
        for a in os.environ.get("SMTP_REJECT_RCPT", "").split(",")
        if a.strip()
    }
    tempfail = os.environ.get("SMTP_TEMPFAIL_RCPT", "")
    tempfail = (
        (tempfail.rsplit(":", 1)[0].lower(), int(tempfail.rsplit(":", 1)[1]))
        if tempfail
        else ()
    )
    controller = Controller(
        Relay(maildir, delay, reject, tempfail),
        hostname="127.0.0.1",
        port=int(port),
        tls_context=ctx,
        require_starttls=True,
        authenticator=authenticator,
        auth_required=True,
        auth_require_tls=True,
        auth_exclude_mechanism=[
            m for m in os.environ.get("SMTP_AUTH_EXCLUDE", "").split(",") if m
        ],
    )
    controller.start()
    print("ready", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()
    controller.stop()


if __name__ == "__main__":
    main()
