from __future__ import annotations

NAME = "sign"
HELP = "Sign a bundle with an Ed25519 key (deploy.sig), check a signature, or make a key pair."


def add_arguments(p):
    p.add_argument("bundle", nargs="?", help="the bundle folder to sign or check")
    p.add_argument("--key", metavar="PRIVATE.pem", help="sign BUNDLE with this private key")
    p.add_argument("--new-key", metavar="PRIVATE.pem",
                   help="write a new key pair: PRIVATE.pem (mode 0600) and PRIVATE.pub.pem; never overwrites")
    p.add_argument("--verify", metavar="PUBLIC.pem",
                   help="check BUNDLE's signature against this public key instead of signing (exit 2 if refused)")


def run(args) -> int:
    from ..errors import UserError

    actions = [a for a in ("key", "new_key", "verify") if getattr(args, a)]
    if len(actions) != 1:
        raise UserError("give exactly one of --key PRIVATE.pem, --verify PUBLIC.pem or --new-key PRIVATE.pem")
    from ..bundle import signing

    if args.new_key:
        if args.bundle:
            raise UserError("--new-key makes a key pair only; sign with --key afterwards")
        priv, pub, kid = signing.generate_key_pair(args.new_key)
        print(f"key {kid}: private {priv} (mode 0600, keep it secret), public {pub} (give it to whoever runs the bundles)")
        return 0
    if not args.bundle:
        raise UserError("name the bundle folder")
    if args.verify:
        bundle = signing.check_signature(args.bundle, args.verify)
        print(f"{bundle.path}: signature valid, key {signing.key_id(signing.load_public_key(args.verify))}")
        return 0
    sig, kid = signing.sign_bundle(args.bundle, args.key)
    print(f"{sig}: signed with key {kid}")
    return 0
