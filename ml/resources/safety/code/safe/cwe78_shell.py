import shlex
import shutil


def which_program(command: str) -> str | None:
    return shutil.which(shlex.split(command)[0])
