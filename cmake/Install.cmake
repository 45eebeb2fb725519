# Installs cbt-backup and cbtfs as system tools (programs, man pages, bash
# completions, systemd units, the mount.cbtfs helper, examples) and makes a
# Debian package of them: "cpack -G DEB" in the build tree.  Included from the
# top-level CMakeLists.txt once the targets cbt-backup and cbtfs exist.
#
# Files whose text names an install path (the service's ExecStart, the
# helper's cbtfs) are configured when installed, with the prefix of that
# install: a tree configured for /usr/local installs right with
# "cmake --install --prefix /usr", and CPack's package says /usr.
include(GNUInstallDirs)

cmake_path(GET CMAKE_CURRENT_LIST_DIR PARENT_PATH CBT_ROOT)

set(CBT_SYSTEMD_UNITDIR "lib/systemd/system" CACHE STRING
    "systemd system units, relative to the install prefix")

install(TARGETS cbt-backup cbtfs RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})

# ---- Man pages, rendered by scdoc at build time ---------------------------
find_program(SCDOC scdoc)
if(SCDOC)
  set(cbt_man_pages)
  foreach(page cbt-backup.8 cbtfs.8)
    set(src ${CBT_ROOT}/docs/man/${page}.scd)
    set(out ${PROJECT_BINARY_DIR}/docs/man/${page})
    add_custom_command(OUTPUT ${out}
      COMMAND ${CMAKE_COMMAND} -DSCDOC=${SCDOC} -DINPUT=${src} -DOUTPUT=${out}
              -P ${CMAKE_CURRENT_LIST_DIR}/Scdoc.cmake
      DEPENDS ${src} ${CMAKE_CURRENT_LIST_DIR}/Scdoc.cmake
      COMMENT "Rendering man page ${page}"
      VERBATIM)
    list(APPEND cbt_man_pages ${out})
  endforeach()
  add_custom_target(man-pages ALL DEPENDS ${cbt_man_pages})
  # mount.cbtfs.8 is ".so man8/cbtfs.8": "man mount.cbtfs" shows cbtfs(8).
  install(FILES ${cbt_man_pages} ${CBT_ROOT}/docs/man/mount.cbtfs.8
          DESTINATION ${CMAKE_INSTALL_MANDIR}/man8)
else()
  message(WARNING "scdoc not found: the man pages will be neither built nor installed "
                  "(Debian: apt install scdoc)")
endif()

# ---- Bash completions -----------------------------------------------------
# bash-completion's own directory when it lies under the prefix (so that a
# /usr install lands where bash-completion looks), else the XDG place under
# the prefix, which bash-completion also searches.  Kept relative, so that
# --prefix at install time still applies.
set(cbt_completions_dir ${CMAKE_INSTALL_DATADIR}/bash-completion/completions)
find_package(PkgConfig QUIET)
if(PKG_CONFIG_FOUND)
  pkg_get_variable(cbt_bash_completion_dir bash-completion completionsdir)
  if(cbt_bash_completion_dir)
    cmake_path(IS_PREFIX CMAKE_INSTALL_PREFIX "${cbt_bash_completion_dir}" NORMALIZE
               cbt_under_prefix)
    if(cbt_under_prefix)
      file(RELATIVE_PATH cbt_completions_dir ${CMAKE_INSTALL_PREFIX} ${cbt_bash_completion_dir})
    endif()
  endif()
endif()
install(FILES ${CBT_ROOT}/contrib/bash-completion/cbt-backup
              ${CBT_ROOT}/contrib/bash-completion/cbtfs
        DESTINATION ${cbt_completions_dir})

# ---- systemd units and the mount(8) helper --------------------------------
install(FILES ${CBT_ROOT}/contrib/systemd/cbt-backup@.timer
        DESTINATION ${CBT_SYSTEMD_UNITDIR})
# cbt-backup@.service and mount.cbtfs, configured at install time.
install(CODE "
  set(CBT_ROOT \"${CBT_ROOT}\")
  set(CBT_WORK_DIR \"${PROJECT_BINARY_DIR}/install-configured\")
  set(CBT_BINDIR \"${CMAKE_INSTALL_BINDIR}\")
  set(CBT_SBINDIR \"${CMAKE_INSTALL_SBINDIR}\")
  set(CBT_UNITDIR \"${CBT_SYSTEMD_UNITDIR}\")
  include(\"${CMAKE_CURRENT_LIST_DIR}/InstallConfigured.cmake\")
")

# ---- Examples -------------------------------------------------------------
install(FILES ${CBT_ROOT}/contrib/cbt-backup.conf.example
              ${CBT_ROOT}/contrib/systemd/mnt-backups.mount
        DESTINATION ${CMAKE_INSTALL_DOCDIR})

# ---- Debian package: cpack -G DEB -----------------------------------------
set(CPACK_GENERATOR DEB)
set(CPACK_PACKAGE_NAME cbt-backup)
set(CPACK_PACKAGE_VENDOR "cbt-backup developers")
set(CPACK_PACKAGE_CONTACT "cbt-backup developers")
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY
    "incremental backups of XenServer and XCP-ng VMs, with a FUSE view of every point")
string(CONCAT CPACK_PACKAGE_DESCRIPTION
    "cbt-backup backs up the virtual machines of a XenServer or XCP-ng pool over the XenAPI "
    "and NBD, reading only the blocks Changed Block Tracking reports since the previous "
    "backup. It restores whole VMs, single disks or only the changed blocks, prunes by "
    "keep rules, and runs scheduled jobs from systemd timers. cbtfs shows every backup "
    "point as read-only raw disk images, to copy, loop-mount or stream back.")
# Install at /usr through DESTDIR, so that the files configured at install
# time name /usr, not CPack's staging directory.
set(CPACK_SET_DESTDIR ON)
set(CPACK_INSTALL_PREFIX /usr)
set(CPACK_PACKAGING_INSTALL_PREFIX /usr)
# The package holds the programs without their debug information.
set(CPACK_STRIP_FILES ON)
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
set(CPACK_DEBIAN_PACKAGE_SECTION admin)
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)
# dpkg-shlibdeps sees only linked libraries: libcurl and libnbd are loaded
# with dlopen (util/lazy_lib), and fuse3 brings fusermount3.
set(CPACK_DEBIAN_PACKAGE_DEPENDS "fuse3, libcurl4, libnbd0")
include(CPack)
