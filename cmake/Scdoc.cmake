# cmake -DSCDOC=... -DINPUT=x.scd -DOUTPUT=x.8 -P Scdoc.cmake
# Renders one man page with scdoc; the page appears only when complete, so a
# failed run leaves nothing that looks built.
get_filename_component(dir "${OUTPUT}" DIRECTORY)
file(MAKE_DIRECTORY "${dir}")
execute_process(COMMAND "${SCDOC}"
  INPUT_FILE "${INPUT}" OUTPUT_FILE "${OUTPUT}.tmp"
  RESULT_VARIABLE rc ERROR_VARIABLE err)
if(NOT rc EQUAL 0)
  file(REMOVE "${OUTPUT}.tmp")
  message(FATAL_ERROR "scdoc ${INPUT}: ${err}")
endif()
file(RENAME "${OUTPUT}.tmp" "${OUTPUT}")
