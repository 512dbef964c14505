// AGP (with its built-in Kotlin) and the Compose compiler's Gradle plugin, at the versions
// of the library's catalog, so the apps and the library build with one Kotlin.
buildscript {
    repositories {
        google()
        mavenCentral()
    }
    dependencies {
        classpath("com.android.tools.build:gradle:${libs.versions.agp.get()}")
        classpath(libs.kotlin.gradle.plugin)
        classpath("org.jetbrains.kotlin:compose-compiler-gradle-plugin:${libs.versions.kotlin.get()}")
    }
}
