# Run by "cmake --install" and CPack, from the install(CODE) of Install.cmake:
# installs the files whose text names an install path, configured with the
# prefix of this install (which --prefix may have changed since configure).
# Given: CBT_ROOT (source tree), CBT_WORK_DIR (scratch in the build tree),
# CBT_BINDIR, CBT_SBINDIR, CBT_UNITDIR (as GNUInstallDirs: relative to the
# prefix, or absolute).

function(cbt_full_path dir out)
  if(IS_ABSOLUTE "${dir}")
    set(path "${dir}")
  else()
    cmake_path(APPEND CMAKE_INSTALL_PREFIX "${dir}" OUTPUT_VARIABLE path)
  endif()
  cmake_path(NORMAL_PATH path)
  string(REGEX REPLACE "(.)/$" "\\1" path "${path}")
  set(${out} "${path}" PARENT_SCOPE)
endfunction()

# The name the .in files use, as configure_file would have set it.
cbt_full_path("${CBT_BINDIR}" CMAKE_INSTALL_FULL_BINDIR)
cbt_full_path("${CBT_SBINDIR}" cbt_sbindir)
cbt_full_path("${CBT_UNITDIR}" cbt_unitdir)

configure_file("${CBT_ROOT}/contrib/systemd/cbt-backup@.service.in"
               "${CBT_WORK_DIR}/cbt-backup@.service" @ONLY)
configure_file("${CBT_ROOT}/contrib/mount.cbtfs.in" "${CBT_WORK_DIR}/mount.cbtfs" @ONLY)

# file(INSTALL) puts DESTDIR in front, prints and records what it installs.
file(INSTALL "${CBT_WORK_DIR}/cbt-backup@.service" DESTINATION "${cbt_unitdir}"
     FILE_PERMISSIONS OWNER_READ OWNER_WRITE GROUP_READ WORLD_READ)
file(INSTALL "${CBT_WORK_DIR}/mount.cbtfs" DESTINATION "${cbt_sbindir}"
     FILE_PERMISSIONS OWNER_READ OWNER_WRITE OWNER_EXECUTE GROUP_READ GROUP_EXECUTE
                      WORLD_READ WORLD_EXECUTE)
