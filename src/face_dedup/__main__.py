from face_dedup.cli import main

main()
