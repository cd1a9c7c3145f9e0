// EIP-4361 interop for tests/test_access.py, with the reference implementation (`siwe`, ethers 6).
// argv[2]: JSON {ours: {text, signature}, build: {fields..., privateKey}}. stdout: JSON of
// {parsedOurs: fields siwe read from our text, oursVerified, theirs: {text, signature}}.
'use strict';
const { SiweMessage } = require('siwe');
const { Wallet } = require('ethers');

async function main() {
  const input = JSON.parse(process.argv[2]);
  const ours = new SiweMessage(input.ours.text);
  const verified = await ours.verify({ signature: input.ours.signature, time: ours.issuedAt });
  const wallet = new Wallet(input.build.privateKey);
  const { privateKey, ...fields } = input.build;
  const theirs = new SiweMessage({ ...fields, address: wallet.address });
  const text = theirs.prepareMessage();
  process.stdout.write(
    JSON.stringify({
      parsedOurs: {
        domain: ours.domain,
        address: ours.address,
        statement: ours.statement ?? null,
        uri: ours.uri,
        version: ours.version,
        chainId: ours.chainId,
        nonce: ours.nonce,
        issuedAt: ours.issuedAt,
        expirationTime: ours.expirationTime ?? null,
        resources: ours.resources ?? [],
      },
      oursVerified: verified.success,
      theirs: { text, signature: await wallet.signMessage(text), address: wallet.address },
    }),
  );
}

main().catch(error => {
  process.stderr.write(`${error.stack}\n`);
  process.exit(1);
});
