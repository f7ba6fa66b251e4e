import sys

from keras_alexnet.commands import main

sys.exit(main())
