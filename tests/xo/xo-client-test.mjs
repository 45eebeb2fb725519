// Xen Orchestra's XAPI client (the npm package xen-api, pinned in
// package.json) against the XAPI simulator.  Run by
// tests/integration/xo-client.sh, which installs the package, starts a
// simulator with a VM and passes:
//
//   node xo-client-test.mjs READY_JSON EXPECT_JSON
//
// with XO_CLIENT_DEPS = the directory holding node_modules, SIMCTL = the
// simctl script, NODE_EXTRA_CA_CERTS = the simulator's certificate (so TLS
// is verified for real).  EXPECT_JSON: {"vm": uuid, "vms": simctl vms,
// "vdis": simctl vdis, "md5": {vdi uuid: md5 of the disk}}.
// Prints one line per check and PASS/FAIL; exit status 0 only on PASS.

import { execFileSync } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import { join } from 'node:path'
import { pathToFileURL } from 'node:url'

const [readyFile, expectFile] = process.argv.slice(2)
const ready = JSON.parse(readFileSync(readyFile, 'utf8'))
const expect = JSON.parse(readFileSync(expectFile, 'utf8'))
const require = createRequire(join(process.env.XO_CLIENT_DEPS, 'package.json'))
const { Xapi } = await import(pathToFileURL(require.resolve('xen-api')).href)

let checks = 0
const failures = []
function check(cond, what, detail) {
  checks++
  if (cond) {
    console.log('ok   ' + what)
  } else {
    failures.push(what)
    console.log('FAIL ' + what + (detail === undefined ? '' : ': ' + JSON.stringify(detail)))
  }
}

function finish() {
  if (failures.length === 0) {
    console.log(`PASS: ${checks} checks`)
    process.exit(0)
  }
  console.log(`FAIL: ${failures.length} of ${checks} checks failed: ${failures.join('; ')}`)
  process.exit(1)
}

// The whole run must stay well inside the shell test's time limit.
setTimeout(() => {
  failures.push('overall time limit (40 s)')
  finish()
}, 40e3)

const sleep = ms => new Promise(resolve => setTimeout(resolve, ms))

// waitFor(fn, what): polls fn() until it is truthy (10 s at most).
async function waitFor(fn, what, ms = 10e3) {
  const end = Date.now() + ms
  for (;;) {
    let value
    try {
      value = fn()
    } catch {}
    if (value) {
      check(true, what)
      return value
    }
    if (Date.now() > end) {
      check(false, what, 'not seen within ' + ms / 1e3 + ' s')
      return undefined
    }
    await sleep(25)
  }
}

function simctl(...args) {
  return JSON.parse(
    execFileSync(process.env.SIMCTL, args, {
      encoding: 'utf8',
      env: { ...process.env, XAPISIM_READY: readyFile },
    })
  )
}

async function rejection(promise) {
  try {
    await promise
    return undefined
  } catch (error) {
    return error
  }
}

const url = ready.https_url
const auth = { user: ready.user, password: 'xenroot' }
const simVm = expect.vms.find(v => v.uuid === expect.vm)
const simDisks = simVm.disks.filter(d => d.type === 'Disk')
const simVdi = uuid => expect.vdis.find(v => v.uuid === uuid)

// Ask the server about a session (JSON-RPC, independently of the client).
const sessionStates = {}
function sessionState(session) {
  if (!(session in sessionStates)) {
    sessionStates[session] = 'pending'
    fetch(new URL('/jsonrpc', url), {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'pool.get_all', params: [session] }),
    })
      .then(r => r.json())
      .then(r => { sessionStates[session] = r.error?.message ?? 'valid' })
      .catch(e => { sessionStates[session] = String(e) })
      .finally(() => setTimeout(() => delete sessionStates[session], 50))
  }
  return sessionStates[session]
}

// ---- 1. the default client: JSON-RPC, events on every class --------------------------
const xapi = new Xapi({ url, auth, allowUnauthorized: false })
try {
  // Login, pool.get_all_records, system.listMethods.
  await xapi.connect()
  check(xapi.status === 'connected', 'connect and log in over HTTPS (certificate verified)')
  check(/^OpaqueRef:/.test(xapi.pool?.$ref), 'pool record read at login', xapi.pool?.$ref)

  // event.inject, get_all_records of every class listMethods names, then event.from.
  await Promise.race([xapi.objectsFetched, sleep(10e3)])
  const types = new Set(Object.values(xapi.objects.all).map(o => o.$type))
  check(['VM', 'VBD', 'VDI', 'SR', 'host', 'pool'].every(t => types.has(t)),
    'objects of every class fetched (types from system.listMethods)', [...types])

  // Records: cached (from get_all_records) and read directly, against simctl.
  const vm = xapi.getObjectByUuid(expect.vm)
  const vmRec = await xapi.getRecordByUuid('VM', expect.vm)
  check(vm.name_label === simVm.name_label && vmRec.name_label === simVm.name_label,
    'VM name_label', [vm.name_label, vmRec.name_label, simVm.name_label])
  check(vm.power_state === simVm.power_state && vmRec.power_state === 'Running',
    'VM power_state', [vm.power_state, vmRec.power_state])
  check(vm.is_a_snapshot === false && vm.is_control_domain === false, 'VM flags are booleans')
  const vbds = vm.$VBDs.filter(b => b.type === 'Disk')
  check(vbds.length === simDisks.length, 'VM disks through VBD records', vbds.length)
  for (const d of simDisks) {
    const vbd = vbds.find(b => b.userdevice === String(d.userdevice))
    const vdi = vbd?.$VDI
    const want = simVdi(d.vdi)
    check(vdi?.uuid === d.vdi, `VBD ${d.userdevice} -> VDI ${d.vdi}`, vdi?.uuid)
    const rec = await xapi.getRecord('VDI', vdi.$ref)
    check(rec.virtual_size === want.virtual_size && rec.type === want.type &&
      rec.cbt_enabled === want.cbt_enabled && rec.$SR?.uuid === want.sr,
    `VDI ${d.vdi} record (size, type, CBT, SR)`,
    [rec.virtual_size, rec.type, rec.cbt_enabled, rec.$SR?.uuid])
    check(await xapi.getField('VDI', vdi.$ref, 'virtual_size') === want.virtual_size,
      'VDI.get_virtual_size')
  }
  const vdis = await xapi.getAllRecords('VDI')
  check(vdis.length === expect.vdis.length, 'VDI.get_all_records', [vdis.length, expect.vdis.length])
  const host = xapi.getObject(xapi.pool.master)
  check(typeof host.API_version_major === 'number' && typeof host.API_version_minor === 'number' &&
    typeof host.software_version.product_version === 'string',
  'host record: API version and software_version',
  [host.API_version_major, host.API_version_minor, host.software_version.product_version])

  // Events from changes made behind the client's back (the control interface).
  simctl('power', expect.vm, 'Halted')
  await waitFor(() => xapi.getObjectByUuid(expect.vm).power_state === 'Halted',
    'event: VM power_state Halted after simctl power')
  await waitFor(() => xapi.getObjectByUuid(expect.vm).$VBDs.every(b => !b.currently_attached),
    'event: its VBDs detached')
  simctl('power', expect.vm, 'Running')
  await waitFor(() => xapi.getObjectByUuid(expect.vm).power_state === 'Running',
    'event: VM Running again')

  // Events from calls, and the client's barrier (pool other_config + events).
  await xapi.call('VM.set_name_description', vm.$ref, 'set through xen-api')
  await waitFor(() => xapi.getObjectByUuid(expect.vm).name_description === 'set through xen-api',
    'event: name_description changed by a call')
  await xapi.barrier()
  check(true, 'barrier (pool.add_to_other_config seen through event.from)')

  // Async tasks, completed through task events.
  const disk = vbds[0].$VDI
  const md5 = await xapi.callAsync('VDI.checksum', disk.$ref)
  check(md5 === expect.md5[disk.uuid], 'Async.VDI.checksum result = MD5 of the disk',
    [md5, expect.md5[disk.uuid]])
  await waitFor(() => !Object.values(xapi.objects.all).some(o => o.$type === 'task' && o.name_label === 'Async.VDI.checksum'),
    'event: the destroyed task is deleted from the cache')
  const snapRef = await xapi.callAsync('VM.snapshot', vm.$ref, 'xo-snapshot')
  const snap = await waitFor(() => xapi.getObjectByRef(snapRef),
    'event: the snapshot made by Async.VM.snapshot appears')
  check(snap?.is_a_snapshot === true && snap?.snapshot_of === vm.$ref &&
    snap?.name_label === 'xo-snapshot', 'snapshot record', snap && [snap.is_a_snapshot, snap.name_label])
  check(simctl('vms').some(v => v.uuid === snap?.uuid && v.is_a_snapshot),
    'the snapshot exists in the simulator')
  const error = await rejection(xapi.callAsync('VM.destroy', vm.$ref))
  check(error?.code === 'VM_BAD_POWER_STATE' && error.params[0] === vm.$ref,
    'a failing Async call rejects with the task error', error && [error.code, error.params])

  // Logout: the session is gone on the server.
  const session = xapi.sessionId
  await xapi.disconnect()
  check(xapi.status === 'disconnected', 'disconnect')
  await waitFor(() => sessionState(session) === 'SESSION_INVALID', 'logout ends the session')
} catch (error) {
  check(false, 'JSON-RPC client run', String(error?.stack ?? error))
}

// ---- 2. the XML-RPC transport, events on VM and task only ----------------------------
const xml = new Xapi({ url, auth, transport: 'xml-rpc', watchEvents: ['VM', 'task'] })
try {
  await xml.connect()
  check(xml.status === 'connected', 'XML-RPC: connect (system.listMethods without Status)')
  await Promise.race([xml.objectsFetched, sleep(10e3)])
  const vm = xml.getObjectByUuid(expect.vm, undefined)
  check(vm?.name_description === 'set through xen-api', 'XML-RPC: VM record fetched')
  const disk = simDisks[simDisks.length - 1]
  const ref = await xml.call('VDI.get_by_uuid', disk.vdi)
  const md5 = await xml.callAsync('VDI.checksum', ref)
  check(md5 === expect.md5[disk.vdi], 'XML-RPC: Async.VDI.checksum through task events',
    [md5, expect.md5[disk.vdi]])
  simctl('power', expect.vm, 'Halted')
  await waitFor(() => xml.getObjectByUuid(expect.vm).power_state === 'Halted',
    'XML-RPC: event for a VM power change')
  await xml.disconnect()
  check(xml.status === 'disconnected', 'XML-RPC: disconnect')
} catch (error) {
  check(false, 'XML-RPC client run', String(error?.stack ?? error))
}

finish()
