"""Record layouts of the XAPI classes the simulator serves.

Each factory returns a complete record (every field a real record carries that
matters to a client, with xapi's default values), so that get_record answers
look like xapi's and every field has a get_<field> getter.  Field order
follows the datamodel; values use the Python types wire.py knows how to print
(int prints as a digit string, bool as <boolean>, DateTime with its tag).
"""

import uuid as uuidlib

from wire import EPOCH, DateTime

NULL = "OpaqueRef:NULL"


def new_uuid():
    return str(uuidlib.uuid4())


def new_ref():
    return "OpaqueRef:" + str(uuidlib.uuid4())


VDI_ALLOWED_OPS = ["clone", "copy", "destroy", "forget", "generate_config", "resize",
                   "resize_online", "snapshot", "update", "mirror", "blocked",
                   "force_unlock", "pool_migrate"]
# Deliberately without the CBT operations, like xapi (they are on the SR).

SR_OPS_BASE = ["unplug", "plug", "pbd_create", "update", "pbd_destroy", "vdi_resize",
               "vdi_clone", "scan", "vdi_snapshot", "vdi_mirror", "vdi_create",
               "vdi_destroy", "vdi_set_on_boot", "vdi_introduce"]
SR_OPS_CBT = ["vdi_enable_cbt", "vdi_disable_cbt", "vdi_data_destroy",
              "vdi_list_changed_blocks"]


def vm_record(name, host_ref, power_state="Halted", is_control_domain=False):
    running = power_state == "Running"
    return {
        "uuid": new_uuid(),
        "allowed_operations": [],
        "current_operations": {},
        "name_label": name,
        "name_description": "",
        "power_state": power_state,
        "user_version": 1,
        "is_a_template": False,
        "is_default_template": False,
        "suspend_VDI": NULL,
        "resident_on": host_ref if running else NULL,
        "scheduled_to_be_resident_on": NULL,
        "affinity": NULL,
        "memory_overhead": 11534336,
        "memory_target": 1073741824 if running else 0,
        "memory_static_max": 1073741824,
        "memory_dynamic_max": 1073741824,
        "memory_dynamic_min": 1073741824,
        "memory_static_min": 1073741824,
        "VCPUs_params": {},
        "VCPUs_max": 1,
        "VCPUs_at_startup": 1,
        "actions_after_shutdown": "destroy",
        "actions_after_reboot": "restart",
        "actions_after_crash": "restart",
        "consoles": [],
        "VIFs": [],
        "VBDs": [],
        "VUSBs": [],
        "crash_dumps": [],
        "VTPMs": [],
        "PV_bootloader": "",
        "PV_kernel": "",
        "PV_ramdisk": "",
        "PV_args": "",
        "PV_bootloader_args": "",
        "PV_legacy_args": "",
        "HVM_boot_policy": "BIOS order",
        "HVM_boot_params": {"order": "cd"},
        "HVM_shadow_multiplier": 1.0,
        "platform": {"timeoffset": "0", "device-model": "qemu-upstream-compat",
                     "viridian": "false", "acpi": "1", "apic": "true", "pae": "true",
                     "nx": "true", "vga": "std", "videoram": "8"},
        "PCI_bus": "",
        "other_config": {},
        "domid": 0 if is_control_domain else (1 if running else -1),
        "domarch": "",
        "last_boot_CPU_flags": {},
        "is_control_domain": is_control_domain,
        "metrics": NULL,
        "guest_metrics": NULL,
        "last_booted_record": "",
        "recommendations": "",
        "xenstore_data": {},
        "ha_always_run": False,
        "ha_restart_priority": "",
        "is_a_snapshot": False,
        "snapshot_of": NULL,
        "snapshots": [],
        "snapshot_time": EPOCH,
        "transportable_snapshot_id": "",
        "blobs": {},
        "tags": [],
        "blocked_operations": {},
        "snapshot_info": {},
        "snapshot_metadata": "",
        "parent": NULL,
        "children": [],
        "bios_strings": {},
        "protection_policy": NULL,
        "is_snapshot_from_vmpp": False,
        "snapshot_schedule": NULL,
        "is_vmss_snapshot": False,
        "appliance": NULL,
        "start_delay": 0,
        "shutdown_delay": 0,
        "order": 0,
        "VGPUs": [],
        "attached_PCIs": [],
        "suspend_SR": NULL,
        "version": 0,
        "generation_id": "",
        "hardware_platform_version": 0,
        "has_vendor_device": False,
        "requires_reboot": False,
        "reference_label": "",
        "domain_type": "hvm",
        "NVRAM": {},
        "pending_guidances": [],
    }


def vbd_record(vm_ref, vdi_ref, userdevice, vbd_type="Disk", attached=False,
               mode="RW", bootable=False):
    return {
        "uuid": new_uuid(),
        "allowed_operations": ["attach", "eject"] if vbd_type == "CD" else ["attach"],
        "current_operations": {},
        "VM": vm_ref,
        "VDI": vdi_ref,
        "device": ("xvd" + "abcdefghijklmnop"[int(userdevice) % 16]) if attached else "",
        "userdevice": str(userdevice),
        "bootable": bootable,
        "mode": mode,
        "type": vbd_type,
        "unpluggable": vbd_type != "CD",
        "storage_lock": False,
        "empty": vdi_ref == NULL,
        "other_config": {},
        "currently_attached": attached,
        "status_code": 0,
        "status_detail": "",
        "runtime_properties": {},
        "qos_algorithm_type": "",
        "qos_algorithm_params": {},
        "qos_supported_algorithms": [],
        "metrics": NULL,
    }


def vdi_record(name, sr_ref, virtual_size, vdi_type="user"):
    u = new_uuid()
    return {
        "uuid": u,
        "name_label": name,
        "name_description": "",
        "allowed_operations": list(VDI_ALLOWED_OPS),
        "current_operations": {},
        "SR": sr_ref,
        "VBDs": [],
        "crash_dumps": [],
        "virtual_size": virtual_size,
        "physical_utilisation": 0,
        "type": vdi_type,
        "sharable": False,
        "read_only": False,
        "other_config": {},
        "storage_lock": False,
        "location": u,
        "managed": True,
        "missing": False,
        "parent": NULL,
        "xenstore_data": {},
        "sm_config": {"vdi_type": "vhd"},
        "is_a_snapshot": False,
        "snapshot_of": NULL,
        "snapshots": [],
        "snapshot_time": EPOCH,
        "tags": [],
        "allow_caching": False,
        "on_boot": "persist",
        "metadata_of_pool": NULL,
        "metadata_latest": False,
        "is_tools_iso": False,
        "cbt_enabled": False,
    }


def sr_record(name, sr_type, cbt, physical_size):
    return {
        "uuid": new_uuid(),
        "name_label": name,
        "name_description": "",
        "allowed_operations": SR_OPS_BASE + (SR_OPS_CBT if cbt else []),
        "current_operations": {},
        "VDIs": [],
        "PBDs": [],
        "virtual_allocation": 0,
        "physical_utilisation": 0,
        "physical_size": physical_size,
        "type": sr_type,
        "content_type": "user",
        "shared": False,
        "other_config": {"i18n-key": "local-storage"},
        "tags": [],
        "sm_config": {"devserial": "scsi-SATA_sim_disk"},
        "blobs": {},
        "local_cache_enabled": False,
        "introduced_by": NULL,
        "clustered": False,
        "is_tools_sr": False,
    }


def pbd_record(host_ref, sr_ref):
    return {
        "uuid": new_uuid(),
        "host": host_ref,
        "SR": sr_ref,
        "device_config": {"device": "/dev/sdb"},
        "currently_attached": True,
        "other_config": {},
    }


def host_record(hostname, address):
    return {
        "uuid": new_uuid(),
        "name_label": hostname,
        "name_description": "Default install",
        "memory_overhead": 0,
        "allowed_operations": ["vm_migrate", "provision", "vm_resume", "evacuate", "vm_start"],
        "current_operations": {},
        "API_version_major": 2,
        "API_version_minor": 21,
        "API_version_vendor": "XenSource",
        "API_version_vendor_implementation": {},
        "enabled": True,
        "software_version": {"product_version": "8.4.0", "product_version_text": "8.4",
                             "product_version_text_short": "8.4",
                             "platform_name": "XCP", "platform_version": "3.4.0",
                             "product_brand": "XenServer", "build_number": "sim",
                             "hostname": hostname, "xapi": "24.19", "xapi_build": "24.19.1",
                             "xen": "4.17.3"},
        "other_config": {},
        "capabilities": [],
        "cpu_configuration": {},
        "sched_policy": "credit",
        "supported_bootloaders": ["pygrub", "eliloader"],
        "resident_VMs": [],
        "logging": {},
        "PIFs": [],
        "suspend_image_sr": NULL,
        "crash_dump_sr": NULL,
        "crashdumps": [],
        "patches": [],
        "updates": [],
        "PBDs": [],
        "host_CPUs": [],
        "cpu_info": {"cpu_count": "2", "socket_count": "1", "vendor": "GenuineIntel"},
        "hostname": hostname,
        "address": address,
        "metrics": NULL,
        "license_params": {},
        "ha_statefiles": [],
        "ha_network_peers": [],
        "blobs": {},
        "tags": [],
        "external_auth_type": "",
        "external_auth_service_name": "",
        "external_auth_configuration": {},
        "edition": "xenserver-premium",
        "license_server": {"address": "localhost", "port": "27000"},
        "bios_strings": {},
        "power_on_mode": "",
        "power_on_config": {},
        "local_cache_sr": NULL,
        "chipset_info": {"iommu": "false"},
        "PCIs": [],
        "PGPUs": [],
        "PUSBs": [],
        "ssl_legacy": False,
        "guest_VCPUs_params": {},
        "display": "enabled",
        "virtual_hardware_platform_versions": [0, 1, 2],
        "control_domain": NULL,
        "updates_requiring_reboot": [],
        "features": [],
        "iscsi_iqn": "",
        "multipathing": False,
        "uefi_certificates": "",
        "certificates": [],
        "editions": ["xenserver-premium", "xenserver-trial"],
        "pending_guidances": [],
        "tls_verification_enabled": False,
        "last_software_update": EPOCH,
        "https_only": False,
    }


def pool_record(master_ref, default_sr):
    return {
        "uuid": new_uuid(),
        "name_label": "",
        "name_description": "",
        "master": master_ref,
        "default_SR": default_sr,
        "suspend_image_SR": default_sr,
        "crash_dump_SR": default_sr,
        "other_config": {},
        "ha_enabled": False,
        "ha_configuration": {},
        "ha_statefiles": [],
        "ha_host_failures_to_tolerate": 0,
        "ha_plan_exists_for": 0,
        "ha_allow_overcommit": False,
        "ha_overcommitted": False,
        "blobs": {},
        "tags": [],
        "gui_config": {},
        "health_check_config": {},
        "wlb_url": "",
        "wlb_username": "",
        "wlb_enabled": False,
        "wlb_verify_cert": False,
        "redo_log_enabled": False,
        "redo_log_vdi": NULL,
        "vswitch_controller": "",
        "restrictions": {"restrict_cbt": "false", "restrict_vgpu": "false"},
        "metadata_VDIs": [],
        "ha_cluster_stack": "xhad",
        "allowed_operations": [],
        "current_operations": {},
        "guest_agent_config": {},
        "cpu_info": {},
        "policy_no_vendor_device": False,
        "live_patching_disabled": False,
        "igmp_snooping_enabled": False,
        "uefi_certificates": "",
        "is_psr_pending": False,
        "tls_verification_enabled": False,
        "repositories": [],
        "client_certificate_auth_enabled": False,
        "client_certificate_auth_name": "",
        "repository_proxy_url": "",
        "repository_proxy_username": "",
        "repository_proxy_password": NULL,
        "migration_compression": False,
        "coordinator_bias": True,
    }


def network_record(name, purpose):
    return {
        "uuid": new_uuid(),
        "name_label": name,
        "name_description": "",
        "allowed_operations": [],
        "current_operations": {},
        "VIFs": [],
        "PIFs": [],
        "MTU": 1500,
        "other_config": {},
        "bridge": "xenbr0",
        "managed": True,
        "blobs": {},
        "tags": [],
        "default_locking_mode": "unlocked",
        "assigned_ips": {},
        "purpose": list(purpose),
    }


def task_record(label, description, host_ref):
    return {
        "uuid": new_uuid(),
        "name_label": label,
        "name_description": description,
        "allowed_operations": [],
        "current_operations": {},
        "created": DateTime(),
        "finished": EPOCH,
        "status": "pending",
        "resident_on": host_ref,
        "progress": 0.0,
        "type": "<none/>",
        "result": "",
        "error_info": [],
        "other_config": {},
        "subtask_of": NULL,
        "subtasks": [],
        "backtrace": "()",
    }


def session_record(host_ref, uname, originator):
    now = DateTime()
    return {
        "uuid": new_uuid(),
        "this_host": host_ref,
        "this_user": NULL,
        "last_active": now,
        "pool": False,
        "other_config": {},
        "is_local_superuser": True,
        "subject": NULL,
        "validation_time": now,
        "auth_user_sid": "",
        "auth_user_name": uname,
        "rbac_permissions": [],
        "tasks": [],
        "parent": NULL,
        "originator": originator,
        "client_certificate": False,
    }


def pif_record(host_ref, network_ref, device, ip="", ipv6=(), management=False, mac=""):
    """A physical interface; `ip` is IPv4 ("" if none), `ipv6` a list of
    "address/prefix" strings (xapi stores PIF IPv6 addresses in CIDR form)."""
    return {
        "uuid": new_uuid(),
        "device": device,
        "network": network_ref,
        "host": host_ref,
        "MAC": mac,
        "MTU": 1500,
        "VLAN": -1,
        "metrics": NULL,
        "physical": True,
        "currently_attached": True,
        "ip_configuration_mode": "Static" if ip else "None",
        "IP": ip,
        "netmask": "255.255.255.0" if ip else "",
        "gateway": "",
        "DNS": "",
        "bond_slave_of": NULL,
        "bond_master_of": [],
        "VLAN_master_of": NULL,
        "VLAN_slave_of": [],
        "management": management,
        "other_config": {},
        "disallow_unplug": False,
        "tunnel_access_PIF_of": [],
        "tunnel_transport_PIF_of": [],
        "ipv6_configuration_mode": "Static" if ipv6 else "None",
        "IPv6": list(ipv6),
        "ipv6_gateway": "",
        "primary_address_type": "IPv4" if ip or not ipv6 else "IPv6",
        "managed": True,
        "properties": {"gro": "on"},
        "capabilities": [],
        "igmp_snooping_status": "unknown",
        "sriov_physical_PIF_of": [],
        "sriov_logical_PIF_of": [],
        "PCI": NULL,
    }


# Storage manager plugins as registered by xapi from the drivers' capability
# lists (xapi_sm.ml, create_from_query_result: "NAME/VERSION" strings become
# the `features` map, version 1 when absent; names xapi does not know, such as
# ATOMIC_PAUSE, are dropped).  Lists from xapi-project/sm libs/sm/drivers/
# EXTSR.py, NFSSR.py, LVHDSR.py, ISOSR.py and xcp-ng/sm drivers/LinstorSR.py.
SM_DRIVERS = {
    "ext": ("Local EXT3 VHD", "EXTSR", "Citrix Systems Inc",
            "SR_PROBE SR_UPDATE SR_SUPPORTS_LOCAL_CACHING VDI_CREATE VDI_DELETE VDI_ATTACH "
            "VDI_DETACH VDI_UPDATE VDI_CLONE VDI_SNAPSHOT VDI_RESIZE VDI_MIRROR "
            "VDI_GENERATE_CONFIG VDI_RESET_ON_BOOT/2 VDI_CONFIG_CBT VDI_ACTIVATE "
            "VDI_DEACTIVATE THIN_PROVISIONING VDI_READ_CACHING",
            {"device": "local block device(s) for the file system"}),
    "nfs": ("NFS VHD", "NFSSR", "Citrix Systems Inc",
            "SR_PROBE SR_UPDATE SR_CACHING VDI_CREATE VDI_DELETE VDI_ATTACH VDI_DETACH "
            "VDI_UPDATE VDI_CLONE VDI_SNAPSHOT VDI_RESIZE VDI_GENERATE_CONFIG VDI_MIRROR "
            "VDI_RESET_ON_BOOT/2 VDI_CONFIG_CBT VDI_ACTIVATE VDI_DEACTIVATE "
            "THIN_PROVISIONING VDI_READ_CACHING",
            {"server": "NFS server name or address", "serverpath": "exported path",
             "nfsversion": "NFS version (optional)"}),
    "lvm": ("Local VHD on LVM", "LVHDSR", "XenSource Inc",
            "SR_PROBE SR_UPDATE SR_TRIM VDI_CREATE VDI_DELETE VDI_ATTACH VDI_DETACH "
            "VDI_MIRROR VDI_CLONE VDI_SNAPSHOT VDI_RESIZE VDI_RESET_ON_BOOT/2 VDI_UPDATE "
            "VDI_CONFIG_CBT VDI_ACTIVATE VDI_DEACTIVATE",
            {"device": "local block device(s) for the volume group"}),
    "iso": ("ISO", "ISOSR", "Citrix Systems Inc",
            "VDI_CREATE VDI_DELETE VDI_ATTACH VDI_DETACH SR_SCAN SR_ATTACH SR_DETACH",
            {"location": "path or URL of the ISO library"}),
    # XCP-ng's LINSTOR (XOSTOR) driver: snapshots and clones, but no CBT.
    "linstor": ("LINSTOR resources on XCP-ng", "LinstorSR", "Vates",
                "SR_UPDATE VDI_CREATE VDI_DELETE VDI_UPDATE VDI_ATTACH VDI_DETACH "
                "VDI_ACTIVATE VDI_DEACTIVATE VDI_CLONE VDI_MIRROR VDI_RESIZE VDI_SNAPSHOT "
                "VDI_GENERATE_CONFIG",
                {"group-name": "LVM volume group", "redundancy": "number of replicas"}),
}

# xapi_sr_operations.ml: every SR operation xapi computes allowed_operations
# from, and which SM feature each one needs (sm_cap_table).
SR_ALL_OPS = ["scan", "destroy", "forget", "plug", "unplug", "vdi_create", "vdi_destroy",
              "vdi_resize", "vdi_clone", "vdi_snapshot", "vdi_mirror", "vdi_enable_cbt",
              "vdi_disable_cbt", "vdi_data_destroy", "vdi_list_changed_blocks",
              "vdi_set_on_boot", "vdi_introduce", "vdi_revert", "update", "pbd_create",
              "pbd_destroy"]
SR_OP_FEATURE = {"vdi_create": "VDI_CREATE", "vdi_destroy": "VDI_DELETE",
                 "vdi_resize": "VDI_RESIZE", "vdi_introduce": "VDI_INTRODUCE",
                 "vdi_mirror": "VDI_MIRROR", "vdi_enable_cbt": "VDI_CONFIG_CBT",
                 "vdi_disable_cbt": "VDI_CONFIG_CBT", "vdi_data_destroy": "VDI_CONFIG_CBT",
                 "vdi_list_changed_blocks": "VDI_CONFIG_CBT",
                 "vdi_set_on_boot": "VDI_RESET_ON_BOOT", "update": "SR_UPDATE",
                 "vdi_revert": "VDI_REVERT", "vdi_snapshot": "VDI_SNAPSHOT"}


def sm_features(sr_type):
    """The SM `features` map of an SR type, or None if no SM plugin has that type."""
    d = SM_DRIVERS.get(sr_type)
    if d is None:
        return None
    out = {}
    for item in d[3].split():
        name, _, version = item.partition("/")
        out[name] = int(version or 1)
    return out


def sm_record(sr_type):
    name, driver, vendor, _, config = SM_DRIVERS[sr_type]
    features = sm_features(sr_type)
    return {
        "uuid": new_uuid(),
        "name_label": name,
        "name_description": "%s storage plugin" % name,
        "type": sr_type,
        "vendor": vendor,
        "copyright": "(C) %s" % vendor,
        "version": "1.0",
        "required_api_version": "1.0",
        "configuration": dict(config),
        "capabilities": list(features),
        "features": features,
        "other_config": {},
        "driver_filename": "/opt/xensource/sm/" + driver,
        "required_cluster_stack": [],
        "supported_image_formats": [],
    }
